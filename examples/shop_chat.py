"""A shop's own web app with a chat embedded beside it, on one event loop.

The shop (Starlette, served by uvicorn) has its own customers, its own login and its own
tables in its own SQLite file. chatserver runs in the same process:

- customers log in to the chat over WebSocket with the token the shop's `/login` gave them
  (`Config.authenticator`): the chat account is made on first sight, no second password;
- a `before_send` hook refuses any message with a forbidden word (errno 12, with the reason);
- an `after_event` hook writes every accepted chat into the shop's own `chat_log` table,
  which the shop's `/chat-log` page shows.

Run it (pip install 'chatserver[examples]'):

    python examples/shop_chat.py            # shop on :8080, chat WebSocket on :8081/ws

then `curl -d '{"name":"alice","password":"wonderland"}' localhost:8080/login` for a token, and open
http://localhost:8081/ (or any WebSocket client) to log in with `{"msgid":1,"token":"..."}`.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import chatserver

FORBIDDEN_WORDS = ("refund-scam",)

# The shop's customers (a real shop would hash these passwords, as chatserver does its own).
CUSTOMERS = {"alice": "wonderland", "bob": "builder"}


class Shop:
    """The shop's own data: customers, their login tokens, and what was said in the chat."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.executescript(
            """CREATE TABLE IF NOT EXISTS customer (name TEXT PRIMARY KEY, password TEXT);
            CREATE TABLE IF NOT EXISTS login_token (token TEXT PRIMARY KEY, name TEXT);
            CREATE TABLE IF NOT EXISTS chat_log (
                msg_id INTEGER PRIMARY KEY, sender TEXT, recipient_id INTEGER, text TEXT)"""
        )
        self.db.executemany("INSERT OR IGNORE INTO customer VALUES (?, ?)", CUSTOMERS.items())

    def log_in(self, name: str, password: str) -> str | None:
        row = self.db.execute("SELECT password FROM customer WHERE name = ?", (name,)).fetchone()
        if row is None or not secrets.compare_digest(row[0], password):
            return None
        token = secrets.token_urlsafe(24)
        self.db.execute("INSERT INTO login_token VALUES (?, ?)", (token, name))
        return token

    # chatserver's hooks: the shop decides who a token is, what may be said, and keeps a log.

    async def customer_of(self, token: str) -> str | None:
        row = self.db.execute("SELECT name FROM login_token WHERE token = ?", (token,)).fetchone()
        return None if row is None else str(row[0])

    async def check(self, outgoing: chatserver.Outgoing) -> chatserver.Allow | chatserver.Reject:
        if any(word in outgoing.text.lower() for word in FORBIDDEN_WORDS):
            return chatserver.Reject("the shop does not allow that word")
        return chatserver.Allow()

    async def keep(self, event: chatserver.HookEvent) -> None:
        if isinstance(event, chatserver.DirectMessage):
            self.db.execute(
                "INSERT OR IGNORE INTO chat_log VALUES (?, ?, ?, ?)",
                (event.msg_id, event.sender_name, event.recipient_id, event.text),
            )

    def chat_log(self) -> list[dict[str, object]]:
        rows = self.db.execute(
            "SELECT msg_id, sender, recipient_id, text FROM chat_log ORDER BY msg_id"
        )
        return [
            dict(zip(("msg_id", "sender", "recipient_id", "text"), r, strict=True)) for r in rows
        ]


def web_app(shop: Shop) -> Starlette:
    """The shop's own pages: a login that hands out tokens, and the chat log."""

    async def login(request: Request) -> JSONResponse:
        asked = await request.json()
        token = shop.log_in(str(asked.get("name", "")), str(asked.get("password", "")))
        if token is None:
            return JSONResponse({"error": "wrong name or password"}, status_code=401)
        return JSONResponse({"token": token})

    async def chat_log(request: Request) -> JSONResponse:
        return JSONResponse(shop.chat_log())

    return Starlette(
        routes=[
            Route("/login", login, methods=["POST"]),
            Route("/chat-log", chat_log),
        ]
    )


async def run(
    data: Path,
    *,
    shop_port: int = 8080,
    chat_ws_port: int = 8081,
    ready: Callable[[chatserver.Listening], Awaitable[None]] | None = None,
) -> None:
    """Serve the shop and the chat until cancelled; ready (if given) is awaited once both
    listen, with where the chat listens."""
    shop = Shop(data / "shop.db")
    config = chatserver.Config(
        database=f"sqlite:///{data / 'chat.db'}",
        port=0,  # the chat's TCP port: any free one (the shop's customers use WebSocket)
        ws_port=chat_ws_port,
        authenticator=shop.customer_of,
        hooks=chatserver.Hooks(before_send=shop.check, after_event=shop.keep),
    )
    server = uvicorn.Server(
        uvicorn.Config(
            web_app(shop),
            host="127.0.0.1",
            port=shop_port,
            log_level="warning",
            lifespan="off",
        )
    )
    async with chatserver.open_node(config) as chat, anyio.create_task_group() as tasks:
        listening = await chat.start_serving()
        tasks.start_soon(server.serve)
        while not server.started:  # noqa: ASYNC110 (uvicorn announces it no other way)
            await anyio.sleep(0.01)
        try:
            if ready is not None:
                await ready(listening)
            await anyio.sleep_forever()
        finally:
            server.should_exit = True


if __name__ == "__main__":
    folder = Path("shop-data")
    folder.mkdir(exist_ok=True)
    anyio.run(run, folder)
