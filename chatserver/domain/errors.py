"""Domain errors: each says what went wrong in the chat's own terms; the wire maps them to errno."""


class ChatError(Exception):
    """Base of every error a request can end with; its message is meant for people."""

    default_message = "request failed"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    @property
    def message(self) -> str:
        return str(self.args[0])


class InvalidCredentials(ChatError):
    # The original server's exact text; clients compare against it.
    default_message = "id or password is invalid!"


class NameTaken(ChatError):
    default_message = "name already taken"


class NotLoggedIn(ChatError):
    default_message = "not logged in"


class UnknownUser(ChatError):
    default_message = "no such user"


class UnknownGroup(ChatError):
    default_message = "no such group"


class NotAMember(ChatError):
    default_message = "not a member of that group"


class InvalidRequest(ChatError):
    """A request whose values break a rule: empty text, a request to oneself, a name too long."""

    default_message = "invalid request"


class Forbidden(ChatError):
    default_message = "this request names another user's identity"


class RateLimited(ChatError):
    default_message = "too many requests: slow down"


class QuotaExceeded(ChatError):
    """Over a size limit or quota: the share of a recipient's waiting messages that strangers
    may fill (errno 14)."""

    default_message = "the recipient has too many waiting messages"


class TooLarge(ChatError):
    """A file over the size limit, or an upload over the user's daily quota (errno 14)."""

    default_message = "over a size limit or quota"


class Unavailable(ChatError):
    default_message = "server busy or a dependency is down: try again"


class NotPermitted(ChatError):
    """The user's role does not allow this (a group's roles), or a limit forbids it."""

    default_message = "not permitted"


class Muted(ChatError):
    """A muted member's group message: refused until `until` (ms since the epoch)."""

    default_message = "you are muted in this group"

    def __init__(self, until_ms: int, message: str | None = None) -> None:
        super().__init__(message)
        self.until_ms = until_ms
