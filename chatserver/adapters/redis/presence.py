"""Presence in Redis: the hash `user:ID` names, for each device of a user that is online, the
node its session is on and since when ("NODE<tab>STARTED_MS"); `node:ID` is that node's lease.

A node renews its lease every few seconds. A node that dies stops renewing, and within the
lease (10 s by default) its users count as offline everywhere: nothing waits on it after.
"""

import time
from collections.abc import Collection, Sequence

import redis.asyncio as aioredis

from chatserver.adapters.redis.connection import Calls
from chatserver.domain.ports import DeviceSession

# Set the device's session; return every session as it was before.
_CLAIM = """
local before = redis.call('HGETALL', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return before
"""
# Delete the device's session only if it is still on this node; return the sessions left.
_RELEASE = """
local where = redis.call('HGET', KEYS[1], ARGV[1])
if where and string.sub(where, 1, #ARGV[2] + 1) == ARGV[2] .. '\t' then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return redis.call('HVALS', KEYS[1])
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
        self._claim = client.register_script(_CLAIM)
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

    async def claim_all(self, sessions: Sequence[tuple[int, str, int]]) -> None:
        """Claim (user, device, started_ms) sessions again, e.g. after Redis restarted."""
        if not sessions:
            return
        with self.calls.call():
            pipe = self.client.pipeline(transaction=False)
            for user_id, device, started_ms in sessions:
                pipe.hset(self.user_key(user_id), device, f"{self.node_id}\t{started_ms}")
            await pipe.execute()

    async def claim(
        self, user_id: int, device: str, node_id: str, started_ms: int
    ) -> dict[str, DeviceSession]:
        with self.calls.call():
            flat = await self._claim(
                keys=[self.user_key(user_id)], args=[device, f"{node_id}\t{started_ms}"]
            )
        before = {
            _text(flat[i]): _session(flat[i + 1]) for i in range(0, len(flat), 2)
        }
        alive = await self.live_nodes({where.node_id for where in before.values()})
        return {device: where for device, where in before.items() if where.node_id in alive}

    async def release(self, user_id: int, device: str, node_id: str) -> bool:
        with self.calls.call():
            left = await self._release(keys=[self.user_key(user_id)], args=[device, node_id])
        nodes = {_session(value).node_id for value in left}
        return bool(nodes and await self.live_nodes(nodes))

    async def locate(self, user_ids: Sequence[int]) -> dict[int, frozenset[str]]:
        if not user_ids:
            return {}
        with self.calls.call():
            pipe = self.client.pipeline(transaction=False)
            for uid in user_ids:
                pipe.hvals(self.user_key(uid))
            answers = await pipe.execute()
        found = {
            uid: {_session(value).node_id for value in values}
            for uid, values in zip(user_ids, answers, strict=True)
            if values
        }
        alive = await self.live_nodes({node for nodes in found.values() for node in nodes})
        located = {uid: frozenset(nodes & alive) for uid, nodes in found.items()}
        return {uid: nodes for uid, nodes in located.items() if nodes}

    async def sessions(self, user_id: int) -> dict[str, DeviceSession]:
        with self.calls.call():
            flat = await self.client.hgetall(self.user_key(user_id))
        found = {_text(device): _session(value) for device, value in flat.items()}
        alive = await self.live_nodes({where.node_id for where in found.values()})
        return {device: where for device, where in found.items() if where.node_id in alive}

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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _session(value: bytes | str) -> DeviceSession:
    node_id, _, started = _text(value).rpartition("\t")
    return DeviceSession(node_id, int(started) if started.isdigit() else 0)
