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
    """A user together with the stored hash of their password, and until when (ms since the
    epoch) an operator suspended them, if they did."""

    user: User
    password_hash: str
    suspended_until_ms: int | None = None

    def suspended_at(self, now_ms: int) -> bool:
        return self.suspended_until_ms is not None and now_ms < self.suspended_until_ms


# A suspension without an end: the last millisecond of the year 9999.
INDEFINITELY_MS = 253_402_300_799_999
# What others' kept messages from a deleted account show as its sender (PROTOCOL.md, ACCOUNT).
DELETED_USER_NAME = "deleted user"


def check_name(name: str) -> None:
    """A new user name: 1-50 characters and the rules of chatserver.domain.names."""
    check_display_name(name, field="name", max_length=MAX_NAME_LENGTH)


def check_password(password: str) -> None:
    if not 1 <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidRequest(f"password must be 1 to {MAX_PASSWORD_LENGTH} characters")
