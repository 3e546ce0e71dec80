"""What strangers and big groups may put in someone's inbox (issue 16.6).

A stranger is a sender who is not the recipient's friend and shares no group with them.
Strangers' messages to one recipient who is not online on this node (a recipient online here
takes them live, and a flood of them waits for the client: issue 16.5) have a rate (all
strangers together, for the whole cluster: each node enforces its share), and are refused
while the recipient already has many messages that none of their devices has received: the
stored limit's share that strangers may fill, so that friends' messages, never refused, always
fit in what a login pushes. A group message writes one inbox entry per member: each group has a
budget of entries per second, so a big group cannot write tens of thousands a second.
"""

from __future__ import annotations

from attrs import Factory, define

from chatserver.application.sessions import Session, SessionRegistry
from chatserver.domain.errors import QuotaExceeded, RateLimited
from chatserver.domain.ports import Clock, Transaction, UnitOfWork

# Keys a bucket table or the contacts cache keeps at most (the oldest tenth go past it).
_MAX_KEYS = 100_000
# How long an answer to "do these two share a group or a friendship" is believed.
_CONTACT_SECONDS = 60.0
_STRANGER_SECONDS = 5.0


@define
class TokenBuckets:
    """Per key: up to `burst` at once, then `rate` per second (burst 0: no limit); of which
    this node enforces its `share` (1/nodes in a cluster: Node.share_cluster_rates)."""

    burst: float
    rate: float
    levels: dict[int, tuple[float, float]] = Factory(dict)
    share: float = 1.0

    def take(self, key: int, amount: float, now: float) -> bool:
        if not self.burst:
            return True
        burst = self.burst * self.share
        level, at = self.levels.pop(key, (burst, now))
        level = min(burst, level + (now - at) * self.rate * self.share)
        # More than a full bucket (a group bigger than the burst) passes when it is full.
        passed = level >= min(amount, burst)
        self.levels[key] = (level - amount if passed else level, now)
        if len(self.levels) > _MAX_KEYS:
            for stale in list(self.levels)[: _MAX_KEYS // 10]:
                del self.levels[stale]
        return passed


@define
class StrangerGate:
    """The node's record of strangers' messages per recipient, and of who are contacts."""

    per_recipient: TokenBuckets
    stored_share: int  # 0: no share (strangers' messages are never refused for it)
    # (sender, recipient) -> (contacts?, believed until)
    contacts: dict[tuple[int, int], tuple[bool, float]] = Factory(dict)

    def known_contact(self, sender_id: int, recipient_id: int, now: float) -> bool:
        """Whether a message from sender to recipient passes without a look: they are known
        to be contacts, or the gate limits nothing (no rate, no stored share: what a look
        would find changes nothing, and it costs a transaction per message)."""
        if not self.stored_share and not self.per_recipient.burst:
            return True
        seen = self.contacts.get((sender_id, recipient_id))
        return seen is not None and seen[0] and seen[1] > now

    def remember(self, sender_id: int, recipient_id: int, contact: bool, now: float) -> None:
        until = now + (_CONTACT_SECONDS if contact else _STRANGER_SECONDS)
        self.contacts[(sender_id, recipient_id)] = (contact, until)
        if len(self.contacts) > _MAX_KEYS:
            for stale in list(self.contacts)[: _MAX_KEYS // 10]:
                del self.contacts[stale]


def _look(sender_id: int, recipient_id: int, tx: Transaction) -> tuple[bool, int]:
    """Whether the two share a group, and how many messages wait for the recipient beyond
    the device of theirs that got furthest."""
    mine = {group.id for group in tx.groups.groups_of(sender_id)}
    if mine and any(group.id in mine for group in tx.groups.groups_of(recipient_id)):
        return True, 0
    furthest = max((mark.pos for mark in tx.inbox.marks(recipient_id).values()), default=0)
    return False, tx.inbox.last_pos(recipient_id) - furthest


async def check_stranger(
    session: Session,
    recipient_id: int,
    *,
    gate: StrangerGate,
    here: SessionRegistry,
    uow: UnitOfWork,
    clock: Clock,
) -> None:
    """Raise RateLimited (errno 9) or QuotaExceeded (errno 14) for a message from session's
    user to recipient_id from a stranger past the limits (gate: the node's, here: its
    sessions); nothing for a friend or a fellow member of a group."""
    me = session.user.id
    if recipient_id == me or recipient_id in session.friend_ids or here.of(recipient_id):
        return  # a recipient online here takes it live (and slows a flood: issue 16.5)
    now = clock.now_ms() / 1000
    if gate.known_contact(me, recipient_id, now):
        return
    seen = gate.contacts.get((me, recipient_id))
    if seen is not None and seen[1] > now and not gate.per_recipient.take(recipient_id, 1, now):
        raise RateLimited("too many messages to this user from people they do not know")
    shared, waiting = await uow.run(lambda tx: _look(me, recipient_id, tx))
    gate.remember(me, recipient_id, shared, now)
    if shared:
        return
    charged = seen is not None and seen[1] > now  # charged above
    if not charged and not gate.per_recipient.take(recipient_id, 1, now):
        raise RateLimited("too many messages to this user from people they do not know")
    if gate.stored_share and waiting >= gate.stored_share:
        raise QuotaExceeded(
            "this user has too many waiting messages to take more from people they do not know"
        )


def check_group_fan_out(budget: TokenBuckets, group_id: int, entries: int, now: float) -> None:
    """Raise RateLimited (errno 9) when the group has written its budget of inbox entries
    (budget: the node's, per group)."""
    if not budget.take(group_id, entries, now):
        raise RateLimited("this group's messages are arriving too fast: slow down")
