"""Cutting a TCP byte stream into frames: JSON texts ended by LF (modern) or NUL (legacy)."""

DEFAULT_FRAME_LIMIT = 65536


class FrameSplitter:
    """Collects the bytes of one connection and hands back each complete frame, in order.

    A ``\\r`` right before ``\\n`` is dropped and empty frames are skipped. ``legacy`` stays None
    until the first non-empty frame, then says whether it ended with NUL (an original client).
    Once a frame grows past ``limit`` bytes (terminator not counted), ``too_large`` is set and
    nothing more is returned: the caller answers errno 8 and closes the connection.
    """

    def __init__(self, limit: int = DEFAULT_FRAME_LIMIT) -> None:
        self.limit = limit
        self.legacy: bool | None = None
        self.too_large = False
        self._pending = bytearray()

    @property
    def heard(self) -> bool:
        """Whether any byte of a frame has arrived yet (empty frames do not count)."""
        return self.legacy is not None or bool(self._pending) or self.too_large

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next bytes read and return every frame they complete."""
        if self.too_large:
            return []
        if (not self._pending and len(data) <= self.limit and data.endswith(b"\n")
                and b"\0" not in data and b"\r" not in data):
            # The usual read: whole LF-ended frames, none of them too long, nothing left over.
            frames = data.split(b"\n")
            frames.pop()
            if b"" in frames:
                frames = [f for f in frames if f]
            if frames and self.legacy is None:
                self.legacy = False
            return frames
        end = max(data.rfind(b"\n"), data.rfind(b"\0")) + 1
        if not end:
            self._pending += data
            self._check_pending()
            return []
        if self._pending:
            self._pending += data[:end]
            stream = bytes(self._pending)
            self._pending.clear()
        else:
            stream = data[:end]
        if end < len(data):
            self._pending += data[end:]
        frames, first_ended_with_nul = _split(stream)
        if frames and max(map(len, frames)) > self.limit:
            self._give_up()
            frames = frames[: next(i for i, f in enumerate(frames) if len(f) > self.limit)]
        elif self._pending:
            self._check_pending()
        if frames and self.legacy is None:
            self.legacy = first_ended_with_nul
        return frames

    def _check_pending(self) -> None:
        size = len(self._pending)
        # A trailing CR may yet turn out to be half of a CR LF terminator.
        if size > self.limit and not (size == self.limit + 1 and self._pending.endswith(b"\r")):
            self._give_up()

    def _give_up(self) -> None:
        self.too_large = True
        self._pending = bytearray()


def _split(stream: bytes) -> tuple[list[bytes], bool]:
    """The non-empty frames of ``stream`` (which ends with a terminator), and whether the
    first of them ended with NUL."""
    has_cr = b"\r" in stream
    if b"\0" not in stream:
        return _lines(stream.split(b"\n")[:-1], has_cr), False
    frames: list[bytes] = []
    first_ended_with_nul: bool | None = None
    for part in stream.split(b"\0"):
        # Each piece of ``part`` but the last ended with LF; the last one ended with NUL.
        *lines, last = part.split(b"\n")
        frames += _lines(lines, has_cr)
        if frames and first_ended_with_nul is None:
            first_ended_with_nul = False
        if last:
            frames.append(last)
            if first_ended_with_nul is None:
                first_ended_with_nul = True
    return frames, bool(first_ended_with_nul)


def _lines(pieces: list[bytes], has_cr: bool) -> list[bytes]:
    """The non-empty frames among pieces that each ended with LF, less a CR before the LF."""
    # The usual stream has neither CRs nor empty lines: it is checked for both in C.
    if has_cr:
        pieces = [p[:-1] if p.endswith(b"\r") else p for p in pieces]
    if b"" in pieces:
        pieces = [p for p in pieces if p]
    return pieces
