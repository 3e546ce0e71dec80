"""Presence in Redis: `user:ID` names the node a user is on; `node:ID` is that node's lease.

A node renews its lease every few seconds. A node that dies stops renewing, and within the
lease (10 s by default) its users count as offline everywhere: nothing waits on it after.
"""

import time
from collections.abc import Collection, Sequence

import redis.asyncio as aioredis

from chatserver.adapters.redis.connection import Calls

# Delete the user's key only if it still names this node.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisPresence:
    def __init__(
        self,
        client: aioredis.Redis,
        namespace: str,
        node_id: str,
        *,
        lease_seconds: float,
        calls: Calls | None = None,
    ) -> None:
        self.client = client
        self.calls = calls or Calls()
        self.namespace = namespace
        self.node_id = node_id
        self.lease_seconds = lease_seconds
        self._release = client.register_script(_RELEASE)
        # Which nodes were alive, and when that was read: a second of staleness is fine
        # against a lease of many seconds, and saves a round trip per message.
        self._alive: dict[str, float] = {}

    def user_key(self, user_id: int) -> str:
        return f"{self.namespace}:user:{user_id}"

    def node_key(self, node_id: str) -> str:
        return f"{self.namespace}:node:{node_id}"

    async def renew_lease(self) -> bool:
        """Renew this node's lease; False if it had lapsed (or Redis restarted empty)."""
        with self.calls.call():
            previous = await self.client.set(
                self.node_key(self.node_id), b"1", px=int(self.lease_seconds * 1000), get=True
            )
        return previous is not None

    async def drop_lease(self) -> None:
        with self.calls.call():
            await self.client.delete(self.node_key(self.node_id))

    async def claim_all(self, user_ids: Sequence[int]) -> None:
        """Claim users again, e.g. after Redis restarted and forgot them."""
        if not user_ids:
            return
        with self.calls.call():
            await self.client.mset({self.user_key(uid): self.node_id for uid in user_ids})

    async def claim(self, user_id: int, node_id: str) -> str | None:
        with self.calls.call():
            previous = await self.client.set(self.user_key(user_id), node_id, get=True)
        if not isinstance(previous, bytes):
            return None
        previous_node = previous.decode()
        if previous_node == node_id or not await self.live_nodes([previous_node]):
            return None
        return previous_node

    async def release(self, user_id: int, node_id: str) -> None:
        with self.calls.call():
            await self._release(keys=[self.user_key(user_id)], args=[node_id])

    async def locate(self, user_ids: Sequence[int]) -> dict[int, str]:
        if not user_ids:
            return {}
        with self.calls.call():
            nodes = await self.client.mget([self.user_key(uid) for uid in user_ids])
        found = {
            uid: node.decode()
            for uid, node in zip(user_ids, nodes, strict=True)
            if isinstance(node, bytes)
        }
        alive = await self.live_nodes(set(found.values()))
        return {uid: node for uid, node in found.items() if node in alive}

    async def live_nodes(self, node_ids: Collection[str]) -> set[str]:
        now = time.monotonic()
        alive = {n for n in node_ids if n == self.node_id or now - self._alive.get(n, -9) < 1.0}
        unknown = [n for n in node_ids if n not in alive]
        if unknown:
            with self.calls.call():
                pipe = self.client.pipeline(transaction=False)
                for node in unknown:
                    pipe.exists(self.node_key(node))
                answers = await pipe.execute()
            for node, answer in zip(unknown, answers, strict=True):
                if answer:
                    self._alive[node] = now
                    alive.add(node)
                else:
                    self._alive.pop(node, None)
        return alive
