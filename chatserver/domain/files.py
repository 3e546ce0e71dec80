"""Files shared in chats: what is known of one, and the rules on names, sizes and types."""

from attrs import frozen

from chatserver.domain.errors import InvalidRequest

MAX_FILE_NAME_LENGTH = 255
MAX_MIME_LENGTH = 127
# Served inline, with their type: pictures a browser shows and does not run. SVG can hold
# script and is served as an attachment, like HTML and everything else.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


@frozen
class StoredFile:
    """A file's row: sha256 is None until its upload completed."""

    id: int
    owner_id: int
    name: str
    size: int
    mime: str
    created_ms: int
    sha256: str | None = None

    @property
    def complete(self) -> bool:
        return self.sha256 is not None


def check_file(name: str, size: int, mime: str) -> None:
    if not 1 <= len(name) <= MAX_FILE_NAME_LENGTH or any(c in name for c in "/\\\0"):
        raise InvalidRequest(f"name: 1 to {MAX_FILE_NAME_LENGTH} characters, no / or \\")
    if size < 0:
        raise InvalidRequest("size: must not be negative")
    kind, slash, sub = mime.partition("/")
    if not slash or not kind or not sub or len(mime) > MAX_MIME_LENGTH or not mime.isascii():
        raise InvalidRequest("mime: a media type such as image/png")


def served_inline(mime: str) -> bool:
    return mime.lower() in INLINE_TYPES
