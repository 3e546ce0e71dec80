"""The webhook's wire: each event as a JSON body, signed with HMAC-SHA256, POSTed with httpx.

The body: `{"event_id": "<16 hex>-<hex>", "type": "<kind>", "data": {...}}` (README, "Webhooks").
The header `X-Chatserver-Signature: sha256=<hex>` is HMAC-SHA256 of the body's exact bytes under
the shared secret; a receiver recomputes it (`verify`) before trusting the body, and dedupes by
event_id (delivery is at least once).
"""

import hashlib
import hmac
from typing import Any

import httpx
import orjson

from chatserver.adapters.serialization import event_to_dict
from chatserver.application.hooks import (
    AccountCreated,
    FriendRemoved,
    FriendRequested,
    GroupFounded,
    HookEvent,
)
from chatserver.application.webhooks import WebhookRejected

SIGNATURE_HEADER = "X-Chatserver-Signature"
EVENT_ID_HEADER = "X-Chatserver-Event-Id"
# Client errors that say "later" rather than "never": timeout, too early, too many requests.
RETRIED_4XX = frozenset({408, 425, 429})


def encode_event(event_id: str, event: HookEvent) -> str:
    """The JSON body of one event."""
    data: dict[str, Any]
    if isinstance(event, AccountCreated):
        kind, data = "account_created", {"user_id": event.user.id, "name": event.user.name}
    elif isinstance(event, FriendRequested | FriendRemoved):
        kind = "friend_requested" if isinstance(event, FriendRequested) else "friend_removed"
        data = {"user_id": event.user_id, "friend_id": event.friend_id}
    elif isinstance(event, GroupFounded):
        kind = "group_founded"
        data = {"group_id": event.group_id, "creator_id": event.creator_id, "name": event.name}
    else:
        data = event_to_dict(event)
        kind = data.pop("kind")
    return orjson.dumps({"event_id": event_id, "type": kind, "data": data}).decode()


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    """Whether signature (the header's value) was made for body with secret."""
    return hmac.compare_digest(sign(secret, body), signature)


class HttpWebhookSender:
    """POSTs bodies to one URL over a pooled httpx client (keep-alive, bounded connections)."""

    def __init__(
        self, url: str, secret: str, *, timeout_seconds: float = 10.0, connections: int = 8
    ) -> None:
        self.url = url
        self._secret = secret
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            follow_redirects=False,
            headers={"User-Agent": "chatserver-webhook", "Content-Type": "application/json"},
        )

    async def send(self, body: str) -> bool:
        content = body.encode()
        event_id = orjson.loads(content)["event_id"]
        response = await self._client.post(
            self.url,
            content=content,
            headers={
                SIGNATURE_HEADER: sign(self._secret, content),
                EVENT_ID_HEADER: str(event_id),
            },
        )
        await response.aclose()
        status = response.status_code
        if 400 <= status < 500 and status not in RETRIED_4XX:
            raise WebhookRejected(f"HTTP {status}")
        return response.is_success

    async def aclose(self) -> None:
        await self._client.aclose()
