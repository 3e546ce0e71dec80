"""The bus on Redis pub/sub: one channel per node, and one that every node hears.

Pub/sub is at-most-once; what must not be lost is in the recipients' inboxes before it is sent
(a session that misses a push reads it from there), not in Redis.

What is sent while a batch is on its way to Redis waits and goes in the next one, as one
PUBLISH per channel carrying a JSON array (`send_batches`): under load a node pays one round
trip for many messages instead of one each, and what goes to one node keeps its order.
"moved" hints are not waited for.
"""

import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import anyio
import anyio.lowlevel
import orjson
import redis.asyncio as aioredis
from anyio.abc import TaskStatus

from chatserver.adapters.redis.connection import FAILURES, Calls
from chatserver.adapters.serialization import event_from_dict, event_to_dict
from chatserver.domain.errors import Unavailable
from chatserver.domain.messages import Delivery, Event, Kept
from chatserver.domain.ports import BusHandler

log = logging.getLogger("chatserver.redis")

ANSWER_TIMEOUT_SECONDS = 3.0


class _Answers:
    """Answers to one request so far."""

    def __init__(self) -> None:
        self.count = 0
        self.arrived = anyio.Event()


class _Batch:
    """Messages to publish together, by channel, and what came of it."""

    def __init__(self) -> None:
        self.channels: dict[str, list[bytes]] = {}
        self.heard: dict[str, int] = {}
        self.error: BaseException | None = None
        self.sent = anyio.Event()

    def add(self, channel: str, message: dict[str, Any]) -> None:
        self.channels.setdefault(channel, []).append(orjson.dumps(message))

    def payloads(self) -> dict[str, bytes]:
        """What to publish on each channel."""
        return {
            channel: messages[0] if len(messages) == 1 else b"[" + b",".join(messages) + b"]"
            for channel, messages in self.channels.items()
        }


class RedisBus:
    def __init__(
        self, client: aioredis.Redis, namespace: str, node_id: str, calls: Calls | None = None
    ) -> None:
        self.client = client
        self.calls = calls or Calls()
        self.namespace = namespace
        self.node_id = node_id
        self.broadcast_channel = f"{namespace}:bus:all"
        self._requests: dict[str, _Answers] = {}
        self.subscribed = False
        self._batch = _Batch()
        self._batching = False  # send_batches is running
        self._waiting = anyio.Event()  # set when the batch has something in it

    def channel(self, node_id: str) -> str:
        return f"{self.namespace}:bus:{node_id}"

    async def node_count(self) -> int:
        """How many nodes listen to the bus now (each subscribes to the broadcast channel)."""
        try:
            with self.calls.call():
                counts = await self.client.pubsub_numsub(self.broadcast_channel)
        except FAILURES as error:
            raise Unavailable("the message bus is down") from error
        return max(1, int(counts[0][1])) if counts else 1

    async def _publish(self, channel: str, message: dict[str, Any]) -> int:
        """Publish; how many nodes heard it."""
        if not self._batching:
            with self.calls.call():
                return int(await self.client.publish(channel, orjson.dumps(message)))
        batch = self._queue(channel, message)
        await batch.sent.wait()
        if batch.error is not None:
            raise Unavailable("the message bus is down: try again") from batch.error
        return batch.heard[channel]

    def _queue(self, channel: str, message: dict[str, Any]) -> _Batch:
        batch = self._batch
        batch.add(channel, message)
        self._wake_sender()
        return batch

    def _wake_sender(self) -> None:
        if not self._waiting.is_set():
            self._waiting.set()

    async def send_batches(self) -> None:
        """Publish what is queued, a batch at a time, for as long as the node runs."""
        self._batching = True
        try:
            while True:
                await self._waiting.wait()
                # Let what is ready to run in this turn of the event loop join the batch.
                await anyio.lowlevel.checkpoint()
                batch, self._batch = self._batch, _Batch()
                self._waiting = anyio.Event()
                await self._send(batch)
        finally:
            # Stopping: what is queued fails (the batch on its way finishes in _send); what is
            # published from now on goes straight to Redis.
            self._batching = False
            batch = self._batch
            if not batch.sent.is_set():
                batch.error = ConnectionError("the node is leaving the cluster")
                batch.sent.set()

    async def _send(self, batch: _Batch) -> None:
        try:
            payloads = batch.payloads()
            pipe = self.client.pipeline(transaction=False)
            for channel, payload in payloads.items():
                pipe.publish(channel, payload)
            with self.calls.call():
                answers = await pipe.execute()
            batch.heard = {
                channel: int(heard) for channel, heard in zip(payloads, answers, strict=True)
            }
        except Unavailable as error:
            batch.error = error.__cause__
            log.warning("bus: publishing failed: %s", error.__cause__)
        except Exception as error:  # not Redis being away: say so, and go on batching
            batch.error = error
            log.exception("bus: publishing failed")
        finally:
            batch.sent.set()

    async def deliver(
        self,
        node_id: str,
        user_ids: Sequence[int],
        event: Event,
        positions: Sequence[int] | None = None,
    ) -> bool:
        message = {"t": "deliver", "us": user_ids, "o": self.node_id, "e": event_to_dict(event)}
        if positions is not None:
            message["ps"] = positions
        return await self._publish(self.channel(node_id), message) > 0

    async def kick(
        self, node_id: str, user_id: int, device: str, reason: str | None = None
    ) -> None:
        message: dict[str, Any] = {"t": "kick", "u": user_id, "d": device}
        if reason is not None:
            message["why"] = reason
        await self._ask(self.channel(node_id), message)

    async def relocated(self, user_id: int) -> None:
        # Waits for every node, so a message sent anywhere after it looks the user up.
        await self._ask(self.broadcast_channel, {"t": "relocated", "u": user_id})

    async def _ask(self, channel: str, message: dict[str, Any]) -> None:
        """Publish, then wait until every node that heard it answers it has done it.

        A node that dies meanwhile never answers: go on without it after a while.
        """
        request = secrets.token_hex(8)
        waiting = self._requests[request] = _Answers()
        try:
            heard_by = await self._publish(channel, {**message, "o": self.node_id, "r": request})
            with anyio.move_on_after(ANSWER_TIMEOUT_SECONDS):
                while waiting.count < heard_by:
                    await waiting.arrived.wait()
                    waiting.arrived = anyio.Event()
        finally:
            del self._requests[request]

    async def moved(self, node_id: str, user_id: int) -> None:
        message = {"t": "moved", "u": user_id}
        if self._batching:
            self._queue(self.channel(node_id), message)
            return
        with contextlib.suppress(Unavailable):  # only a hint: the sender looks again later
            await self._publish(self.channel(node_id), message)

    async def forget_group(self, group_id: int) -> None:
        # Waits for every node, so a message sent anywhere after the reply sees the change.
        await self._ask(self.broadcast_channel, {"t": "group", "g": group_id})

    async def forget_user(self, user_id: int) -> None:
        # Waits for every node, so a chat sent anywhere after it finds no such user.
        await self._ask(self.broadcast_channel, {"t": "gone", "u": user_id})

    async def forget_friend(self, node_id: str, user_id: int, friend_id: int) -> None:
        await self._publish(self.channel(node_id), {"t": "unfriend", "u": user_id, "f": friend_id})

    async def blocked(self, node_id: str, user_id: int, by_id: int, blocked: bool) -> None:
        # Waits for the node, so a chat the blocked user sends there after the BLOCK's reply
        # is refused.
        await self._ask(
            self.channel(node_id), {"t": "block", "u": user_id, "b": by_id, "on": blocked}
        )

    async def listen(
        self,
        inbox: BusHandler,
        on_reconnect: Callable[[], Awaitable[None]],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Hand what arrives for this node to inbox, for as long as the node runs.

        Subscribed before task_status.started(), so nothing sent after that is missed. When
        Redis goes away this keeps trying, with backoff; redis-py subscribes again by itself
        on reconnecting, and then on_reconnect() runs.
        """
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self.channel(self.node_id), self.broadcast_channel)
        self.subscribed = True
        task_status.started()
        backoff = 0.1
        try:
            while True:
                try:
                    message = await pubsub.get_message(timeout=1.0)
                except FAILURES as error:
                    if self.subscribed:
                        log.warning("bus: lost Redis (%s); reconnecting", error)
                    self.subscribed = False
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
                    continue
                if not self.subscribed:
                    self.subscribed = True
                    backoff = 0.1
                    await on_reconnect()
                if message is not None and message.get("type") == "message":
                    data = orjson.loads(message["data"])
                    for one in data if isinstance(data, list) else (data,):
                        await self._dispatch(inbox, one)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await cast(Any, pubsub).aclose()  # annotated only since redis 8.2

    async def _answer(self, request: dict[str, Any]) -> None:
        await self._publish(self.channel(request["o"]), {"t": "done", "r": request["r"]})

    async def _dispatch(self, inbox: BusHandler, message: dict[str, Any]) -> None:
        kind = message["t"]
        try:
            if kind == "deliver":
                event = event_from_dict(message["e"])
                positions = message.get("ps")
                for index, user_id in enumerate(message["us"]):
                    if positions is not None:  # a delivery, at its pos in each user's inbox
                        await inbox.deliver(
                            user_id, Kept(positions[index], cast(Delivery, event)), message["o"]
                        )
                    else:
                        await inbox.deliver(user_id, event, message["o"])
            elif kind == "kick":
                await inbox.kick(message["u"], message["d"], message.get("why"))
                await self._answer(message)
            elif kind == "relocated":
                if message["o"] != self.node_id:
                    await inbox.moved(message["u"])
                await self._answer(message)
            elif kind == "gone":
                if message["o"] != self.node_id:
                    await inbox.forget_user(message["u"])
                await self._answer(message)
            elif kind == "done":
                waiting = self._requests.get(message["r"])
                if waiting is not None:
                    waiting.count += 1
                    waiting.arrived.set()
            elif kind == "group":
                if message["o"] != self.node_id:
                    await inbox.forget_group(message["g"])
                await self._answer(message)
            elif kind == "unfriend":
                await inbox.forget_friend(message["u"], message["f"])
            elif kind == "block":
                await inbox.blocked(message["u"], message["b"], message["on"])
                await self._answer(message)
            elif kind == "moved":
                await inbox.moved(message["u"])
        except Unavailable as error:
            log.warning("bus: handling a %r message failed: %s", kind, error.__cause__)
        except Exception:
            log.exception("bus: handling a %r message failed", kind)
