"""Users and accounts, and the rules for names and passwords."""

import unicodedata

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


# Control, format (bidi overrides, zero-width), surrogate, private-use and unassigned characters:
# invisible, or able to disguise a name as another one.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Characters that show nothing although they are letters or symbols (Hangul fillers, the blank
# Braille pattern).
_BLANK = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# What shows nothing by itself: spaces, combining marks, and the blanks above.
_INVISIBLE_CATEGORIES = frozenset({"Zs", "Mn", "Me"})


def check_name(name: str) -> None:
    """A user name: 1-50 characters, in NFKC form (so that a decomposed or full-width copy of
    a name cannot be registered beside it), without control or format characters (bidi
    overrides, zero-width characters, ESC, newline, NUL), without spaces at either end, and
    with something visible in it."""
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise InvalidRequest(f"name must be 1 to {MAX_NAME_LENGTH} characters")
    if name.isascii():  # the common case: printable ASCII needs only two checks
        if not name.isprintable():
            raise InvalidRequest("name must not contain control characters")
        if name != name.strip():
            raise InvalidRequest("name must not begin or end with a space")
        if name.isspace():
            raise InvalidRequest("name must contain a visible character")
        return
    if not unicodedata.is_normalized("NFKC", name):
        raise InvalidRequest(
            "name must be in Unicode NFKC form (no decomposed accents, no full-width letters):"
            f" try {unicodedata.normalize('NFKC', name)!r}"
        )
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in name):
        raise InvalidRequest(
            "name must not contain control, format (bidi, zero-width) or unassigned characters"
        )
    if name != name.strip() or name[0] in _BLANK or name[-1] in _BLANK:
        raise InvalidRequest("name must not begin or end with a space")
    if all(c in _BLANK or unicodedata.category(c) in _INVISIBLE_CATEGORIES for c in name):
        raise InvalidRequest("name must contain a visible character")


def check_password(password: str) -> None:
    if not 1 <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidRequest(f"password must be 1 to {MAX_PASSWORD_LENGTH} characters")
