"""A node's membership in a Redis-backed cluster: its presence, its bus, and the lease that
tells the others it is alive."""

import contextlib
import logging
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus

from chatserver.adapters.redis.bus import RedisBus
from chatserver.adapters.redis.connection import Calls, open_redis, split_url
from chatserver.adapters.redis.presence import RedisPresence
from chatserver.domain.errors import Unavailable
from chatserver.domain.ports import BusHandler

log = logging.getLogger("chatserver.redis")

DEFAULT_LEASE_SECONDS = 10.0


class RedisCluster:
    def __init__(
        self, url: str, node_id: str, *, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> None:
        redis_url, namespace = split_url(url)
        self.node_id = node_id
        self.client = open_redis(redis_url)
        # Every call to Redis, timed when observe_calls is given a histogram.
        self.calls = Calls()
        self.presence = RedisPresence(
            self.client, namespace, node_id, lease_seconds=lease_seconds, calls=self.calls
        )
        self.bus = RedisBus(self.client, namespace, node_id, self.calls)
        self.lease_seconds = lease_seconds

    def observe_calls(self, observe: Callable[[float], None]) -> None:
        """Give the time of every call to Redis to observe (seconds)."""
        self.calls.observe = observe

    async def run(
        self,
        inbox: BusHandler,
        local_users: Callable[[], list[tuple[int, str, int]]],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Keep this node in the cluster until cancelled; then leave it."""
        await self.presence.renew_lease()
        self._rejoin = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.bus.send_batches)
                await tg.start(self.bus.listen, inbox, self._ask_to_rejoin)
                tg.start_soon(self._keep_lease)
                tg.start_soon(self._rejoin_when_asked, inbox, local_users)
                tg.start_soon(self._count_nodes, inbox)
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                with contextlib.suppress(Unavailable):
                    await self.presence.drop_lease()
                await self.client.aclose()

    async def _ask_to_rejoin(self) -> None:
        self._rejoin.set()

    async def _keep_lease(self) -> None:
        while True:
            await anyio.sleep(self.lease_seconds / 4)
            # A node that cannot hear the bus must not look alive: others would publish into
            # the void rather than store.
            if not self.bus.subscribed:
                continue
            try:
                if not await self.presence.renew_lease():
                    self._rejoin.set()  # Redis lost our lease: it restarted, or we stalled
            except Unavailable as error:
                log.warning("bus: cannot renew this node's lease: %s", error.__cause__)

    async def _count_nodes(self, inbox: BusHandler) -> None:
        """Tell the node how many nodes the cluster has, at the lease's pace: limits kept per
        node enforce their share (BusHandler.cluster_size). Redis down: the last count holds."""
        told = 1
        while True:
            if self.bus.subscribed:
                try:
                    nodes = await self.bus.node_count()
                except Unavailable:
                    nodes = told
                if nodes != told:
                    log.info("bus: %d nodes in the cluster", nodes)
                    inbox.cluster_size(nodes)
                    told = nodes
            await anyio.sleep(self.lease_seconds / 4)

    async def _rejoin_when_asked(
        self, inbox: BusHandler, local_users: Callable[[], list[tuple[int, str, int]]]
    ) -> None:
        """After Redis comes back: say again who is here, then fetch what others stored for
        them meanwhile (a second time a little later: a sender may have looked just before)."""
        while True:
            await self._rejoin.wait()
            self._rejoin = anyio.Event()
            backoff = 0.1
            while True:
                try:
                    await self.presence.renew_lease()
                    await self.presence.claim_all(local_users())
                    await inbox.catch_up()
                    break
                except Unavailable as error:
                    log.warning("bus: rejoining the cluster failed (%s); retrying", error)
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
            users = len(local_users())
            log.info("bus: rejoined the cluster with %d user%s", users, "" if users == 1 else "s")
            await anyio.sleep(self.lease_seconds / 4)
            with contextlib.suppress(Unavailable):
                await inbox.catch_up()
