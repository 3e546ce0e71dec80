"""A scripted Version 2 peer for the web page: PROTOCOL.md's devices and inbox, in memory.

The page's own logic (dedup by msg_id and pos, SYNC paging, truncation, carbons, the READ mark
across conversations, msgids it does not know) is driven here by frames the test chooses,
which a real server sends only in rare races. The page is served by a real server; Playwright
routes its WebSocket (`/ws`) to this object instead. Everything runs on the test's thread (the
sync Playwright API calls the handlers while the test waits on the page).

Only what the page uses is spoken: LOGIN (device, since), ONE_CHAT, PING, RECEIPT, LOGOUT,
SYNC, HISTORY, READ. The end-to-end tests against the real server are in test_web_inbox.py.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from playwright.sync_api import BrowserContext, WebSocketRoute

Frame = dict[str, Any]


@dataclass
class FakeUser:
    id: int
    name: str
    password: str
    inbox: list[Frame] = field(default_factory=list)  # inbox[i] has pos first_pos + i
    first_pos: int = 1  # positions below it have left the history window
    read_pos: int = 0

    @property
    def last_pos(self) -> int:
        return self.first_pos + len(self.inbox) - 1


@dataclass
class FakeSession:
    route: WebSocketRoute
    user: FakeUser | None = None
    device: str | None = None
    since: int | None = None


class FakeInbox:
    def __init__(self) -> None:
        self.users: dict[int, FakeUser] = {}
        self.sessions: list[FakeSession] = []
        self.received: list[Frame] = []  # every frame from every page, in order
        self._ids = itertools.count(1)
        self._msg_ids = itertools.count(5001)

    # ---- set-up from the test
    def user(self, name: str, password: str = "pw") -> FakeUser:
        user = FakeUser(next(self._ids), name, password)
        self.users[user.id] = user
        return user

    def attach(self, context: BrowserContext) -> None:
        """Every page of `context` talks to this fake instead of the server's /ws."""
        context.route_web_socket("**/ws", self._connect)

    def chat(self, sender: FakeUser, to: FakeUser, text: str) -> Frame:
        """`sender` sends a one-to-one chat (from a client that is not a page here)."""
        msg_id = next(self._msg_ids)
        obj = self._chat_object(sender, to, text, msg_id)
        self._append(to, obj)
        if sender.id != to.id:
            self._append(sender, obj)
        return obj

    def push(self, user: FakeUser, frame: Frame) -> None:
        """Send `frame` as it is to every session of `user`."""
        for session in self._sessions_of(user):
            session.route.send(json.dumps(frame))

    def append_raw(self, user: FakeUser, obj: Frame) -> Frame:
        """Any object with a msg_id (a GROUP_EVENT, a msgid no page knows) into the inbox."""
        return self._append(user, {**obj, "msg_id": next(self._msg_ids)})

    def forget_before(self, user: FakeUser, pos: int) -> None:
        """Positions below `pos` leave the history window."""
        drop = pos - user.first_pos
        if drop > 0:
            del user.inbox[:drop]
            user.first_pos = pos

    def drop_all(self) -> None:
        """Every connection drops (as a server would on a network failure)."""
        sessions, self.sessions = self.sessions, []
        for session in sessions:
            session.route.close()

    def requests(self, msgid: int) -> list[Frame]:
        return [frame for frame in self.received if frame.get("msgid") == msgid]

    def logins(self) -> list[Frame]:
        return self.requests(1)

    # ---- the protocol
    def _connect(self, route: WebSocketRoute) -> None:
        session = FakeSession(route)
        self.sessions.append(session)
        route.on_message(lambda message: self._on_frame(session, message))
        route.on_close(lambda *_: self._drop(session))

    def _drop(self, session: FakeSession) -> None:
        if session in self.sessions:
            self.sessions.remove(session)

    def _sessions_of(self, user: FakeUser, but: FakeSession | None = None) -> list[FakeSession]:
        return [
            s for s in self.sessions if s.user is not None and s.user.id == user.id and s is not but
        ]

    def _append(self, user: FakeUser, obj: Frame, but: FakeSession | None = None) -> Frame:
        """Into the inbox at the next pos, and to every session of the user but `but` (the
        session that sent it gets the pos in its ACK instead)."""
        kept = {**obj, "pos": user.last_pos + 1}
        user.inbox.append(kept)
        for session in self._sessions_of(user, but=but):
            session.route.send(json.dumps(kept))
        return kept

    def _chat_object(self, sender: FakeUser, to: FakeUser, text: str, msg_id: int) -> Frame:
        now = time.time()
        return {
            "msgid": 6,
            "id": sender.id,
            "name": sender.name,
            "toid": to.id,
            "msg": text,
            "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)),
            "ts": int(now * 1000),
            "msg_id": msg_id,
        }

    def _reply(self, session: FakeSession, request: Frame, **fields: Any) -> None:
        reply = {"msgid": 11, "reply_to": request["msgid"], "errno": 0, **fields}
        if "seq" in request:
            reply["seq"] = request["seq"]
        session.route.send(json.dumps(reply))

    def _on_frame(self, session: FakeSession, message: str | bytes) -> None:
        request = json.loads(message)
        self.received.append(request)
        kind = request.get("msgid")
        if kind == 1:
            self._login(session, request)
            return
        user = session.user
        if user is None:
            self._reply(session, request, errno=3, errmsg="not logged in")
        elif kind == 6:
            to = self.users.get(request["toid"])
            if to is None:
                self._reply(session, request, errno=4, errmsg="no such user")
                return
            msg_id = next(self._msg_ids)
            obj = self._chat_object(user, to, request["msg"], msg_id)
            if to.id != user.id:
                self._append(to, obj)
            # A message to oneself takes one pos and reaches every session, the sender's too.
            kept = self._append(user, obj, but=session if to.id != user.id else None)
            self._reply(session, request, msg_id=msg_id, pos=kept["pos"])
        elif kind == 20:
            since, limit = request["since"], request.get("limit", 200)
            msgs = [m for m in user.inbox if m["pos"] > since][:limit]
            truncated = since + 1 < user.first_pos
            self._reply(session, request, msgs=msgs, last_pos=user.last_pos, truncated=truncated)
        elif kind == 21:
            self._history(session, user, request)
        elif kind == 22:
            pos = request["pos"]
            if pos > user.read_pos:
                user.read_pos = pos
                for other in self._sessions_of(user, but=session):
                    other.route.send(json.dumps({"msgid": 22, "pos": pos}))
            self._reply(session, request)
        elif kind == 3:
            session.user = None
            self._reply(session, request)
        elif kind in (16, 19):
            self._reply(session, request)
        else:
            self._reply(session, request, errno=7, errmsg=f"unknown msgid {kind}")

    def _login(self, session: FakeSession, request: Frame) -> None:
        user = self.users.get(request.get("id", -1))
        if user is None:
            user = next((u for u in self.users.values() if u.name == request.get("name")), None)
        if user is None or request.get("password") != user.password:
            reply = {"msgid": 2, "errno": 1, "errmsg": "id or password is invalid!"}
            session.route.send(json.dumps({**reply, "seq": request.get("seq")}))
            return
        device = request.get("device", "default")
        for other in self._sessions_of(user, but=session):
            if other.device == device:
                other.route.send(json.dumps({"msgid": 15, "errmsg": "logged in elsewhere"}))
                other.user = None
        session.user, session.device = user, device
        session.since = request.get("since")
        since = session.since if isinstance(session.since, int) else user.last_pos
        ack = {
            "msgid": 2,
            "seq": request.get("seq"),
            "errno": 0,
            "id": user.id,
            "name": user.name,
            "friends": [],
            "groups": [],
            "offlinemsg": [m for m in user.inbox if m["pos"] > since][:200],
            "friend_requests": [],
            "last_pos": user.last_pos,
            "read_pos": user.read_pos,
        }
        session.route.send(json.dumps(ack))

    def _history(self, session: FakeSession, user: FakeUser, request: Frame) -> None:
        peer = request.get("with")
        before = request.get("before")
        limit = request.get("limit", 50)
        mine = [
            m
            for m in user.inbox
            if m.get("msgid") == 6
            and {m["id"], m["toid"]} == {user.id, peer}
            and (before is None or m["pos"] < before)
        ]
        self._reply(session, request, msgs=mine[-limit:], more=len(mine) > limit)

