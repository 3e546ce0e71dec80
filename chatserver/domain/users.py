"""Users and accounts, and the rules for names and passwords."""

from attrs import frozen

from chatserver.domain.errors import InvalidRequest

MAX_NAME_LENGTH = 50
MAX_PASSWORD_LENGTH = 128


@frozen
class User:
    """Who someone is to other users: an id and a display name."""

    id: int
    name: str


@frozen
class Account:
    """A user together with the stored hash of their password."""

    user: User
    password_hash: str


def check_name(name: str) -> None:
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise InvalidRequest(f"name must be 1 to {MAX_NAME_LENGTH} characters")


def check_password(password: str) -> None:
    if not 1 <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidRequest(f"password must be 1 to {MAX_PASSWORD_LENGTH} characters")
