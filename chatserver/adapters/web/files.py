"""Files over the web port (PROTOCOL.md Version 2, "Files"): signed, expiring upload and
download paths, the bytes kept in a folder by their sha256, uploads streamed to disk while
hashed, downloads with Range (aiohttp's FileResponse, sendfile underneath)."""

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import time
from concurrent.futures import Future, ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import anyio
from aiohttp import web

from chatserver.application import files
from chatserver.application.node import Node
from chatserver.domain.files import served_inline
from chatserver.domain.ports import Clock

log = logging.getLogger("chatserver.files")

UPLOAD_PREFIX = "/files/upload/"
DOWNLOAD_PREFIX = "/files/"
# Bytes read from an upload before they are hashed and written out (in worker threads) at
# once: one upload holds two such batches in memory at most, besides aiohttp's buffer.
WRITE_BATCH = 1024 * 1024
# The threads that hash and write uploads, shared by all of them (two busy per upload).
UPLOAD_THREADS = 8
READ_CHUNK = 256 * 1024

# A download is never a page: no script, no plugin, nothing it may load.
_DOWNLOAD_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, max-age=600",
    "Server": "chatserver",
}


class FolderStore:
    """Files' bytes in a folder, each once, at ab/abcdef... (its sha256); uploads are written
    beside them in .incoming and moved into place once their hash is known."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.incoming = self.root / ".incoming"

    def prepare(self) -> None:
        self.incoming.mkdir(parents=True, exist_ok=True)
        # What an upload cut short by a crash left behind.
        for leftover in self.incoming.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def new_upload(self) -> Path:
        return self.incoming / secrets.token_hex(16)

    def keep(self, upload: Path, sha256: str) -> None:
        """Move a finished upload to its content address (the same bytes are kept once: if
        they are there already, the upload is left for the caller to remove)."""
        target = self.path(sha256)
        if target.exists():
            return  # and no rename over it, which would make ext4 flush the upload first
        target.parent.mkdir(exist_ok=True)
        os.replace(upload, target)

    async def delete(self, sha256: str) -> None:
        def remove() -> None:
            with contextlib.suppress(FileNotFoundError):
                self.path(sha256).unlink()

        await anyio.to_thread.run_sync(remove)

    async def response(
        self, request: web.BaseRequest, sha256: str, headers: dict[str, str]
    ) -> web.StreamResponse | None:
        """The bytes as an HTTP answer (Range included); None if they are not here."""
        path = self.path(sha256)
        if not await anyio.Path(path).exists():
            return None
        return web.FileResponse(path, chunk_size=READ_CHUNK, headers=headers)


class Store(Protocol):
    """Where the web port keeps files' bytes: a folder, or an S3-compatible bucket."""

    def new_upload(self) -> Path: ...

    def keep(self, upload: Path, sha256: str) -> None: ...

    async def delete(self, sha256: str) -> None: ...

    async def response(
        self, request: web.BaseRequest, sha256: str, headers: dict[str, str]
    ) -> web.StreamResponse | None: ...


class SignedLinks:
    """Upload and download paths signed with HMAC-SHA256 under a key every node shares
    (--file-key), valid until the time they carry."""

    def __init__(self, key: bytes, clock: Clock) -> None:
        self.key = key
        self.clock = clock

    def _sign(self, *parts: object) -> str:
        text = ":".join(str(part) for part in parts).encode()
        return hmac.new(self.key, text, hashlib.sha256).hexdigest()

    def upload_url(self, file_id: int, expires_ms: int) -> str:
        return f"{UPLOAD_PREFIX}{file_id}?e={expires_ms}&s={self._sign('up', file_id, expires_ms)}"

    def download_url(self, file_id: int, user_id: int, expires_ms: int) -> str:
        signature = self._sign("down", file_id, user_id, expires_ms)
        return f"{DOWNLOAD_PREFIX}{file_id}?u={user_id}&e={expires_ms}&s={signature}"

    def valid(self, query: dict[str, str], *parts: object) -> bool:
        """Whether the query's signature is ours for these parts and not expired."""
        expires, signature = query.get("e", ""), query.get("s", "")
        if not expires.isdigit() or int(expires) < self.clock.now_ms():
            return False
        return hmac.compare_digest(self._sign(*parts, int(expires)), signature)


class FileTransfers:
    """The HTTP side of files: PUT of an upload, GET (and HEAD) of a download."""

    def __init__(self, node: Node, store: Store, links: SignedLinks) -> None:
        self.node = node
        self.store = store
        # Where uploads are hashed and written, two threads per upload at most (started when
        # needed): however many uploads arrive, the threads stay this few.
        self.threads = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="upload")
        self.links = links

    def handles(self, path: str) -> bool:
        return path.startswith(DOWNLOAD_PREFIX)

    async def handle(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        query = dict(request.query)
        if path.startswith(UPLOAD_PREFIX):
            file_id = _id(path[len(UPLOAD_PREFIX):])
            if request.method != "PUT":
                return _plain(HTTPStatus.METHOD_NOT_ALLOWED, "PUT the file's bytes\n")
            if file_id is None or not self.links.valid(query, "up", file_id):
                return _plain(HTTPStatus.FORBIDDEN, "not a valid upload link\n")
            return await self._upload(request, file_id)
        file_id = _id(path[len(DOWNLOAD_PREFIX):])
        if request.method not in ("GET", "HEAD"):
            return _plain(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed\n")
        user = query.get("u", "")
        if file_id is None or not user.isdigit() or not self.links.valid(
            query, "down", file_id, int(user)
        ):
            return _plain(HTTPStatus.FORBIDDEN, "not a valid download link\n")
        return await self._download(request, file_id)

    async def _upload(self, request: web.BaseRequest, file_id: int) -> web.StreamResponse:
        stored = await files.stored_file(self.node, file_id)
        if stored is None:
            return _plain(HTTPStatus.NOT_FOUND, "no such upload\n")
        if stored.complete:
            return _plain(HTTPStatus.CONFLICT, "already uploaded\n")
        length = request.content_length
        if length is None:
            return _plain(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required\n")
        if length != stored.size:
            return _plain(HTTPStatus.BAD_REQUEST,
                          f"the upload was announced with {stored.size} bytes\n")
        upload = self.store.new_upload()
        started = time.perf_counter()
        try:
            try:
                sha256 = await self._receive(request, upload, stored.size)
            except (ConnectionError, ValueError, web.HTTPException) as error:
                log.info("upload of file %d cut short: %s", file_id, error or type(error).__name__)
                return _plain(HTTPStatus.BAD_REQUEST, "upload cut short\n")
            if sha256 is None:
                return _plain(HTTPStatus.BAD_REQUEST, "the body is not the announced size\n")
            await anyio.to_thread.run_sync(self.store.keep, upload, sha256)
        finally:
            # Cut short (the client went away, or the size was wrong): nothing is left.
            with contextlib.suppress(FileNotFoundError):
                await anyio.to_thread.run_sync(upload.unlink)
        if not await files.complete_upload(self.node, file_id, sha256):
            return _plain(HTTPStatus.NOT_FOUND, "no such upload\n")
        log.info("file %d uploaded: %d bytes in %.3f s", file_id, stored.size,
                 time.perf_counter() - started)
        response = web.json_response({"file_id": file_id, "sha256": sha256},
                                     status=HTTPStatus.CREATED, headers={"Server": "chatserver"})
        response.force_close()
        return response

    async def _receive(self, request: web.BaseRequest, upload: Path, size: int) -> str | None:
        """Write the body to upload while hashing it; its sha256, or None if it was not size
        bytes. The chunks aiohttp parsed are gathered into batches (no copy); one thread
        hashes a batch and another writes it while the event loop receives the next, so memory
        holds two batches, and reading waits only for a hash or a disk that is behind."""
        digest = hashlib.sha256()
        received = 0
        loop = asyncio.get_running_loop()
        fd = await loop.run_in_executor(
            self.threads, os.open, upload, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600
        )

        def hash_batch(batch: list[bytes]) -> None:
            for chunk in batch:
                digest.update(chunk)  # hashlib lets go of the GIL for big chunks

        # A batch is handed on only when the one before is hashed and written: each upload's
        # batches go in order, one at a time, whichever threads take them.
        writing: Future[None] | None = None
        busy: asyncio.Future[tuple[None, None]] | None = None

        def hand_on(batch: list[bytes]) -> asyncio.Future[tuple[None, None]]:
            nonlocal writing
            writing = self.threads.submit(_write_all, fd, batch)
            hashing = self.threads.submit(hash_batch, batch)
            return asyncio.gather(asyncio.wrap_future(hashing), asyncio.wrap_future(writing))

        try:
            batch: list[bytes] = []
            batched = 0
            # Each chunk as the parser made it: iter_any() would join what arrived meanwhile
            # into a new bytes object, a copy of much of the upload (the body has a
            # Content-Length, so no chunk of the transfer encoding ends in between).
            async for chunk, _ in request.content.iter_chunks():
                received += len(chunk)
                if received > size:
                    return None
                batch.append(chunk)
                batched += len(chunk)
                if batched >= WRITE_BATCH:
                    if busy is not None:
                        await busy  # hashing or the disk is behind: reading pauses
                    busy = hand_on(batch)
                    batch, batched = [], 0
            if busy is not None:
                await busy
            if batch:
                busy = hand_on(batch)
                await busy
        finally:
            if busy is not None and not busy.done():
                # Left behind by an error or a cancellation: its own error is not wanted.
                busy.add_done_callback(lambda done: done.cancelled() or done.exception())
            if writing is not None and not writing.done():
                # A write still under way: the file is closed after it, by its thread (never
                # before: the descriptor's number could be another file's by then).
                writing.add_done_callback(lambda _: os.close(fd))
            else:
                os.close(fd)
        return digest.hexdigest() if received == size else None

    async def _download(self, request: web.BaseRequest, file_id: int) -> web.StreamResponse:
        stored = await files.stored_file(self.node, file_id)
        if stored is None or stored.sha256 is None:
            return _plain(HTTPStatus.NOT_FOUND, "no such file\n")
        headers = dict(_DOWNLOAD_HEADERS)
        name = quote(stored.name, safe="")
        if served_inline(stored.mime):
            # A picture a browser shows and does not run: its own type, shown in place.
            headers["Content-Type"] = stored.mime.lower()
            headers["Content-Disposition"] = f"inline; filename*=UTF-8''{name}"
        else:
            # Everything else (HTML and SVG too) is saved, never shown in the page's origin.
            headers["Content-Type"] = "application/octet-stream"
            headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{name}"
        response = await self.store.response(request, stored.sha256, headers)
        if response is None:
            return _plain(HTTPStatus.NOT_FOUND, "no such file\n")
        response.force_close()
        return response


def _write_all(fd: int, chunks: list[bytes]) -> None:
    """All of chunks to fd, in one system call when it takes them all."""
    views = [memoryview(chunk) for chunk in chunks]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if views:
            views[0] = views[0][written:]


def _id(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) < 19 else None


def _plain(status: HTTPStatus, text: str) -> web.Response:
    response = web.Response(status=status.value, text=text, content_type="text/plain",
                            headers={"Server": "chatserver", "X-Content-Type-Options": "nosniff"})
    response.force_close()
    return response
