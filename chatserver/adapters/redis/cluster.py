"""A node's membership in a Redis-backed cluster: its presence, its bus, and the lease that
tells the others it is alive."""

import contextlib
import logging
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus

from chatserver.adapters.redis.bus import RedisBus
from chatserver.adapters.redis.connection import open_redis, split_url
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
        self.presence = RedisPresence(
            self.client, namespace, node_id, lease_seconds=lease_seconds
        )
        self.bus = RedisBus(self.client, namespace, node_id)
        self.lease_seconds = lease_seconds

    async def run(
        self,
        inbox: BusHandler,
        local_users: Callable[[], list[int]],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Keep this node in the cluster until cancelled; then leave it."""
        await self.presence.renew_lease()
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.bus.listen, inbox)
                tg.start_soon(self._keep_lease, local_users)
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                with contextlib.suppress(Unavailable):
                    await self.presence.drop_lease()
                await self.client.aclose()

    async def _keep_lease(self, local_users: Callable[[], list[int]]) -> None:
        lost = False
        while True:
            await anyio.sleep(self.lease_seconds / 4)
            try:
                await self.presence.renew_lease()
                if lost:
                    # Redis may have restarted empty: say again who is here.
                    await self.presence.claim_all(local_users())
                    log.info("bus: Redis is back; %d users claimed again", len(local_users()))
                lost = False
            except Unavailable as error:
                if not lost:
                    log.warning("bus: cannot renew this node's lease: %s", error.__cause__)
                lost = True
