"""Users and accounts, and the rules for names and passwords."""

from attrs import frozen

from chatserver.domain.errors import InvalidRequest
from chatserver.domain.names import check_display_name

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
    """A new user name: 1-50 characters and the rules of chatserver.domain.names."""
    check_display_name(name, field="name", max_length=MAX_NAME_LENGTH)


def check_password(password: str) -> None:
    if not 1 <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidRequest(f"password must be 1 to {MAX_PASSWORD_LENGTH} characters")
