"""A session's life, from the LOGIN that claims its device to its end: taking over the
device's older session and the user's sessions past the device limit, opening the new one
once the LOGIN's reply is out, ending a session (logout, disconnect, takeover, kick) and
ending every session of a user on every node.

Friends hear that a user is online at the user's first session and offline at the last;
a takeover keeps the user online, and tells nobody.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from attrs import define

from chatserver.application.sessions import Session
from chatserver.domain.errors import Unavailable
from chatserver.domain.messages import Kept, KickedNotice, PresenceNotice
from chatserver.domain.ports import DeviceSession, Outbox
from chatserver.domain.users import User

if TYPE_CHECKING:
    from chatserver.application.node import Node

log = logging.getLogger("chatserver.sessions")


class Holder(Protocol):
    """A client's connection, as far as a session's life goes (application.Connection)."""

    @property
    def node(self) -> Node: ...

    @property
    def outbox(self) -> Outbox: ...

    session: Session | None


@define(eq=False)
class Starting:
    """A session that a LOGIN has claimed and registered, and not yet started."""

    session: Session
    # The user's other sessions that go on, by device.
    others: dict[str, DeviceSession]
    # The user's first session: friends hear that the user is online once it starts.
    first: bool


async def end_previous(connection: Holder, user_id: int, device: str) -> bool:
    """A LOGIN on a connection that has a session: end it. Return whether it was the same
    user and device (a quiet takeover: the user stays online)."""
    previous = connection.session
    if previous is None:
        return False
    relogin = previous.user.id == user_id and previous.device == device
    reason = "logged in again" if relogin else "logged in as another user"
    await end_session(previous, node=connection.node, takeover=relogin, reason=reason)
    connection.session = None
    return relogin


async def claim(
    connection: Holder,
    user: User,
    *,
    device: str,
    receipts: bool,
    notices: bool,
    quiet: bool = False,
) -> Starting:
    """Claim user's device for a new session on connection (with the user's lock held):
    end the sessions it replaces, register it, and make sure other nodes no longer take the
    user for elsewhere or nowhere. From here on, pushes wait in the session until `start`.
    quiet: the connection's own session of that device was replaced (end_previous)."""
    node = connection.node
    started_ms = node.clock.now_ms()
    others, replaced = await _take_over(user.id, device, started_ms, node=node)
    session = Session(
        user,
        connection.outbox,
        receipts=receipts,
        notices=notices,
        unreceipted_limit=node.limits.unreceipted_per_session,
        device=device,
        started_ms=started_ms,
        on_gap=node.gaps.notice,
    )
    # Registered before the inbox is read: from here on, pushes wait in the session.
    node.sessions.add(session)
    connection.session = session
    node.writer.known(user.id)
    # Friends hear of the first session only: a takeover keeps the user online.
    starting = Starting(session, others, first=not others and not replaced and not quiet)
    try:
        if all(where.node_id != node.node_id for where in others.values()):
            # Other nodes may remember this user as elsewhere, or nowhere: not here.
            await node.bus.relocated(user.id)
    except BaseException:
        await abandon(connection, starting)
        raise
    return starting


async def abandon(connection: Holder, starting: Starting) -> None:
    """The LOGIN that claimed starting failed as a whole: the device's mark is as it was."""
    connection.session = None
    await end_session(
        starting.session, node=connection.node, takeover=bool(starting.others),
        reason="login failed",
    )


async def start(
    node: Node,
    starting: Starting,
    *,
    friend_ids: set[int],
    blocked_by: set[int],
    last_pos: int,
    waiting: list[Kept],
) -> None:
    """The LOGIN read the user's inbox up to last_pos (waiting: what it shows) and who they
    know: live pushes follow that, and friends hear of the user's first session."""
    session = starting.session
    session.friend_ids = friend_ids
    # Added to, not replaced: a BLOCK answered while the LOGIN read its snapshot has
    # already told this session (note_blocked), and must not be lost. (An unblock in that
    # window is: the block holds until the next login, failing closed.)
    session.blocked_by |= blocked_by
    session.start(last_pos, waiting)
    if starting.first:
        user_id = session.user.id
        await node.router.notify(sorted(session.friend_ids), PresenceNotice(user_id, True))


def login_replied(session: Session | None) -> None:
    """The hook after LOGIN: its reply is queued, so the new session may now receive what
    arrived meanwhile, and what comes next (Connection.replied)."""
    if session is not None and session.held is not None:
        session.open()


async def end_session(
    session: Session, *, node: Node, reason: str, takeover: bool = False
) -> None:
    """End a session: keep how far its device got, and tell friends when the user's last
    session ended (a takeover replaces it: the user stays online)."""
    if session.ended:
        return
    mark = session.end()
    log.info(
        "session end user=%d reason=%r device=%r mark=%d",
        session.user.id, reason, session.device, mark.pos,
    )
    node.sessions.remove(session)
    user_id = session.user.id
    try:
        if session.next_pos is not None:  # the login read the inbox: the mark means something
            await node.writer.set_mark(user_id, session.device, mark)
    except Unavailable as error:
        # The device's mark stays where it was: what it had comes again at its next login.
        log.warning("keeping the mark of user %d failed: %s", user_id, error)
    if takeover:
        return
    try:
        if not await node.presence.release(user_id, session.device, node.node_id):
            await node.router.notify(sorted(session.friend_ids), PresenceNotice(user_id, False))
    except Unavailable as error:
        # A user still listed here is found gone when the node's lease lapses.
        log.warning("user %d logged out while the cluster was unreachable: %s", user_id, error)


async def end_connection_session(connection: Holder, reason: str) -> None:
    """End the connection's session, if it has one (LOGOUT, a closed connection, ...)."""
    session = connection.session
    if session is not None:
        await end_session(session, node=connection.node, reason=reason)
    connection.session = None


async def kick(
    user_id: int, device: str, *, node: Node, takeover: bool = True, reason: str | None = None
) -> None:
    """End this node's session of user's device: a newer login of that device here replaced
    it (takeover: presence already names the new session), or a login elsewhere did, of the
    same device or of one device too many (its device is released, unless it moved), or
    what reason says (a suspension, a deletion: the KICKED_MSG says it)."""
    session = node.sessions.get(user_id, device)
    if session is None:
        return
    # A legacy session's connection closes once it is out.
    session.push(KickedNotice() if reason is None else KickedNotice(reason))
    if reason is None:
        reason = "replaced by a newer login" if takeover else "a newer login elsewhere"
    await end_session(session, node=node, takeover=takeover, reason=reason)


async def end_sessions(
    user_id: int, *, node: Node, reason: str, keep_device: str | None = None
) -> int:
    """End every session of the user (but keep_device's on this node), here and on other
    nodes, each told by KICKED_MSG saying reason; return how many there were."""
    ended = 0
    for device, other in list(node.sessions.of(user_id).items()):
        if device != keep_device:
            other.push(KickedNotice(reason))
            await end_session(other, node=node, reason=reason)
            ended += 1
    for device, where in (await node.presence.sessions(user_id)).items():
        if where.node_id != node.node_id:
            await node.bus.kick(where.node_id, user_id, device, reason)
            ended += 1
    return ended


async def _take_over(
    user_id: int, device: str, started_ms: int, *, node: Node
) -> tuple[dict[str, DeviceSession], bool]:
    """Claim the device's session for this node: end the device's older session, and the
    user's longest-logged-in ones past the device limit. Return the user's other sessions
    that go on, and whether the device had a session (replaced now)."""
    replaced = node.sessions.get(user_id, device) is not None
    if replaced:
        await kick(user_id, device, node=node)
    sessions = await node.presence.claim(user_id, device, node.node_id, started_ms)
    before = sessions.pop(device, None)
    if before is not None and before.node_id != node.node_id:
        await node.bus.kick(before.node_id, user_id, device)
    replaced = replaced or before is not None
    excess = len(sessions) + 1 - node.limits.devices_per_user
    if excess > 0:
        oldest = sorted(sessions.items(), key=lambda item: item[1].started_ms)[:excess]
        for other, where in oldest:
            del sessions[other]
            if where.node_id == node.node_id:
                await kick(user_id, other, node=node, takeover=False)
            else:
                await node.bus.kick(where.node_id, user_id, other)
    return sessions, replaced
