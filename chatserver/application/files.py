"""Files in chats (PROTOCOL.md Version 2, "Files"): asking to upload one, attaching it to a
message, and asking where to download it. The bytes travel over the web port, outside the
protocol; this module decides who may, and how much."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatserver.application.commands import FileUrl, UploadFile
from chatserver.application.results import DownloadGranted, UploadGranted
from chatserver.domain.errors import (
    ChatError,
    InvalidRequest,
    NotPermitted,
    TooLarge,
    Unavailable,
)
from chatserver.domain.files import StoredFile
from chatserver.domain.messages import FileRef
from chatserver.domain.ports import FileLinks, Transaction

if TYPE_CHECKING:
    from chatserver.application.connection import Connection
    from chatserver.application.node import Node

DAY_MS = 86_400_000


def _links(node: Node) -> FileLinks:
    if node.file_links is None:
        # Off for either reason: no web port, or no folder (a database other than SQLite
        # and no --files). Say both, since the client cannot tell which.
        raise Unavailable("files are off on this server: they need its web port (--ws-port) "
                          "and, with a database other than SQLite, --files")
    return node.file_links


async def upload_file(command: UploadFile, *, connection: Connection) -> UploadGranted:
    """A file row and a signed path to PUT its bytes to; errno 14 before any byte is sent."""
    me = connection.require_session().user.id
    node = connection.node
    links = _links(node)
    limits = node.limits
    if command.size > limits.file_bytes:
        raise TooLarge(f"a file may have at most {limits.file_bytes} bytes")
    now = node.clock.now_ms()

    def reserve(tx: Transaction) -> StoredFile:
        used = tx.files.uploaded_since(me, now - DAY_MS)
        if used + command.size > limits.file_bytes_per_day:
            raise TooLarge(f"over the upload quota of {limits.file_bytes_per_day} bytes a day")
        return tx.files.add(me, command.name, command.size, command.mime, now)

    stored = await node.uow.run(reserve)
    expires = now + limits.file_link_seconds * 1000
    return UploadGranted(stored.id, links.upload_url(stored.id, expires))


async def file_url(command: FileUrl, *, connection: Connection) -> DownloadGranted:
    """A signed download path, for a user who sent or received a kept message with the file
    (a group's members while members); anyone else errno 12."""
    me = connection.require_session().user.id
    node = connection.node
    links = _links(node)
    file_id = command.file_id

    def look(tx: Transaction) -> tuple[StoredFile | None, frozenset[int], frozenset[int]]:
        return tx.files.get(file_id), *tx.files.readers(file_id)

    stored, users, groups = await node.uow.run(look)
    # An unknown file and another's look the same: ids say nothing of what exists.
    if stored is None or not stored.complete:
        raise NotPermitted("not permitted to see that file")
    if stored.owner_id != me and me not in users and not await _member_of_any(node, me, groups):
        raise NotPermitted("not permitted to see that file")
    expires = node.clock.now_ms() + node.limits.file_link_seconds * 1000
    return DownloadGranted(links.download_url(file_id, me, expires))


async def _member_of_any(node: Node, user_id: int, group_ids: frozenset[int]) -> bool:
    for group_id in group_ids:
        try:
            roster = await node.groups.roster(group_id)
        except ChatError:  # dissolved
            continue
        if user_id in roster.members:
            return True
    return False


async def attachment(node: Node, owner_id: int, file_id: int) -> FileRef:
    """The file a chat carries: the sender's own, completely uploaded (errno 7 otherwise)."""
    stored = await node.uow.run(lambda tx: tx.files.get(file_id))
    if stored is None or stored.owner_id != owner_id or stored.sha256 is None:
        raise InvalidRequest("file: unknown, not yours or not completely uploaded")
    return FileRef(stored.id, stored.name, stored.size, stored.mime, stored.sha256)


async def refer(
    node: Node, file: FileRef, msg_id: int, *, group_id: int | None = None,
    recipient_id: int | None = None,
) -> None:
    """Record that message msg_id carries the file (before it is delivered: recipients may
    ask for the file as soon as they have the message)."""
    now = node.clock.now_ms()
    await node.uow.run(lambda tx: tx.files.refer(file.id, msg_id, group_id, recipient_id, now))


async def stored_file(node: Node, file_id: int) -> StoredFile | None:
    return await node.uow.run(lambda tx: tx.files.get(file_id))


async def complete_upload(node: Node, file_id: int, sha256: str) -> bool:
    """The file's bytes are stored under sha256: chats may now carry it."""
    return await node.uow.run(lambda tx: tx.files.complete(file_id, sha256))
