"""Who a listener lets in, whatever its driver: connections counted per address
(ConnectionsPerAddress), and those not yet clients (in their TLS handshake, or waiting for a
PROXY header) capped, so that a client cannot hold more descriptors by never finishing."""

import logging

from chatserver.adapters.serving.requests import REFUSAL_LOG
from chatserver.adapters.serving.settings import ConnectionsPerAddress

log = logging.getLogger("chatserver.tcp")


class Ticket:
    """One accepted connection's place in the counts."""

    __slots__ = ("address", "counted", "peer", "pending")

    def __init__(self, peer: str, address: str) -> None:
        self.peer, self.address = peer, address
        self.counted = False  # against its address
        self.pending = False  # against the cap on connections not yet clients


class Admission:
    """The counts of one listener."""

    def __init__(self, per_address: ConnectionsPerAddress, pending_limit: int) -> None:
        self.per_address = per_address
        self.pending_limit = pending_limit
        self.pending = 0

    def admit_pending(self, ticket: Ticket, waiting_for: str, *, count_address: bool) -> bool:
        """A connection that is not yet a client: count it against the cap on such
        connections and, unless its address is still to be learnt from a proxy, against its
        address. False (and logged) if either is full."""
        if self.pending < self.pending_limit and (
            not count_address or self.per_address.admit(ticket.address)
        ):
            ticket.counted = count_address
            ticket.pending = True
            self.pending += 1
            return True
        if REFUSAL_LOG.allow():
            log.warning("refusing %s: too many connections from there or waiting for a %s "
                        "(%d at most)%s", ticket.peer, waiting_for, self.pending_limit,
                        REFUSAL_LOG.skipped())
        return False

    def admit(self, ticket: Ticket, peer: str | None = None, address: str | None = None) -> bool:
        """The connection is a client (peer, address: as it is known now, a PROXY header may
        have named it): count it against its address (unless it was while pending). False (and
        logged) if that address has too many."""
        self._settled(ticket)
        if not ticket.counted:
            if peer is not None and address is not None:
                ticket.peer, ticket.address = peer, address
            if not self.per_address.admit(ticket.address):
                log.warning("refusing %s: already %d connections from there", ticket.peer,
                            self.per_address.limit)
                return False
            ticket.counted = True
        return True

    def leave(self, ticket: Ticket) -> None:
        """The connection is gone."""
        self._settled(ticket)
        if ticket.counted:
            ticket.counted = False
            self.per_address.leave(ticket.address)

    def _settled(self, ticket: Ticket) -> None:
        if ticket.pending:
            ticket.pending = False
            self.pending -= 1
