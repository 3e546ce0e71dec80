"""The one table from domain errors to errno values, and the errno values only the wire raises."""

from chatserver.domain.errors import (
    ChatError,
    Forbidden,
    InvalidCredentials,
    InvalidRequest,
    Muted,
    NameTaken,
    NotAMember,
    NotLoggedIn,
    NotPermitted,
    QuotaExceeded,
    RateLimited,
    TooLarge,
    Unavailable,
    UnknownGroup,
    UnknownUser,
)

OK = 0
BAD_REQUEST = 7
FRAME_TOO_LARGE = 8
INTERNAL = 11
INTERNAL_MESSAGE = "internal error"

ERRNO_OF: dict[type[ChatError], int] = {
    InvalidCredentials: 1,
    NameTaken: 1,
    NotLoggedIn: 3,
    UnknownUser: 4,
    UnknownGroup: 5,
    NotAMember: 6,
    InvalidRequest: BAD_REQUEST,
    RateLimited: 9,
    Forbidden: 10,
    QuotaExceeded: 14,
    Unavailable: 11,
    NotPermitted: 12,
    Muted: 13,
    TooLarge: 14,
}


def errno_and_message(error: BaseException | None) -> tuple[int, str]:
    """The errno and errmsg that answer ``error``; anything unmapped is an internal error."""
    if isinstance(error, ChatError):
        # Walk the classes so that a subclass of a mapped error keeps its parent's errno.
        for cls in type(error).__mro__:
            errno = ERRNO_OF.get(cls)
            if errno is not None:
                return errno, error.message
    return INTERNAL, INTERNAL_MESSAGE
