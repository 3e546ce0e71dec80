"""What the browser tests of the web page need: a server with --ws-port that can be stopped and
started again on the same ports, a page object that drives the page by its data-testids, and
the fixtures the test modules share (import them: `browser`, `web`, `chat`).

Every wait is bounded (WAIT_MS). The page is only touched as a person would: typing, clicking,
pressing Enter, reading what is on screen.
"""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    expect,
    sync_playwright,
)

from tests.integration.conftest import HOST, Chat, ClusterProcess, ServerProcess, free_port

WAIT_MS = 10_000  # the longest any single expectation waits
CHROMIUM = Path("/usr/bin/chromium")  # Debian's browser; Playwright must not download one


class PageServerProcess(ServerProcess):
    """A server whose web port is chosen once, so that a restart keeps it and the open page
    can reconnect (in conftest's CHATSERVER_TEST_TRANSPORT=websocket mode too)."""

    def __init__(self, database: str, log_path: Path, web_port: int):
        super().__init__(database, log_path)
        self.web_port = web_port

    def command(self, port: int) -> list[str]:
        command = super().command(port)
        self.ws_port = self.web_port  # what conftest waits for, if it waits for one
        return [*command, "--ws-port", str(self.web_port)]  # the last --ws-port wins


class WebServer:
    """`chatserver serve --ws-port W` on a SQLite file; every restart keeps W and the data."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.database = f"sqlite:///{directory / 'chat.db'}"
        self.ws_port = free_port()
        self.processes: list[ServerProcess] = []

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.ws_port}/"

    @property
    def current(self) -> ServerProcess:
        return self.processes[-1]

    def start(self) -> ServerProcess:
        log = self.directory / f"server-{len(self.processes) + 1}.log"
        server = PageServerProcess(self.database, log, self.ws_port).start()
        self.processes.append(server)
        self._wait_for_page(server)
        return server

    def _wait_for_page(self, server: ServerProcess) -> None:
        deadline = time.monotonic() + WAIT_MS / 1000
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url, timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        raise RuntimeError(f"the web page did not come up; log tail:\n{server.log_tail()}")

    def stop(self) -> None:
        self.current.stop()

    def close(self) -> None:
        for server in self.processes:
            server.stop()
        for server in self.processes:
            server.assert_no_traceback()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, for one test module."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """A WebServer for one test module (its files in the default folder beside chat.db)."""
    server = WebServer(tmp_path_factory.mktemp("web"))
    server.start()
    yield server
    server.close()


@pytest.fixture
def chat(web: WebServer) -> Iterator[Chat]:
    """Raw TCP clients on the same server (the third party)."""
    harness = Chat(web.current)
    yield harness
    harness.close_all()


def new_context(browser: Browser, width: int = 1000, height: int = 700) -> BrowserContext:
    """A fresh browser context (its own cookies, localStorage and socket), waits bounded."""
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(WAIT_MS)
    return context


@contextlib.contextmanager
def cluster_pages(browser: Browser, directory: Path) -> Iterator[tuple[ServerProcess, ChatPage,
                                                                      ChatPage]]:
    """`chatserver cluster --ws-port` (two nodes behind nginx) and a page served by each node
    directly, in contexts of their own; on the way out the pages are healthy (if the block
    went well), closed, and the cluster stopped without a traceback in its log."""
    cluster = ClusterProcess(directory, directory / "cluster.log", web=True).start()
    assert isinstance(cluster, ClusterProcess)
    contexts: list[BrowserContext] = []
    try:
        pages = []
        for node in range(2):
            contexts.append(new_context(browser))
            url = f"http://{HOST}:{cluster.node_port + cluster.nodes + node}/"
            pages.append(ChatPage(contexts[-1].new_page(), url).open())
        yield cluster, pages[0], pages[1]
        for page in pages:
            page.assert_healthy()
    finally:
        for context in contexts:
            context.close()
        cluster.stop()
        cluster.assert_no_traceback()


class ChatPage:
    """One browser tab on the chat page."""

    def __init__(self, page: Page, url: str):
        self.page = page
        self.url = url
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def by(self, testid: str) -> Locator:
        return self.page.get_by_test_id(testid)

    # ---- reading the screen
    @property
    def status(self) -> Locator:
        return self.by("connection-status")

    def messages(self) -> Locator:
        return self.by("messages").get_by_test_id("message-text")

    def message(self, text: str) -> Locator:
        return self.messages().filter(has_text=text)

    def my_id(self) -> int:
        return int(self.by("my-id").inner_text())

    def expect_text(self, testid: str, text: str) -> None:
        expect(self.by(testid)).to_have_text(text, timeout=WAIT_MS)

    def expect_message(self, text: str) -> None:
        expect(self.message(text)).to_have_count(1, timeout=WAIT_MS)
        expect(self.message(text)).to_have_text(text, timeout=WAIT_MS)

    def expect_friend_state(self, user_id: int, state: str) -> None:
        self.expect_text(f"friend-state-{user_id}", state)

    # ---- doing things
    def open(self) -> ChatPage:
        self.page.goto(self.url)
        expect(self.status).to_have_text("Connected", timeout=WAIT_MS)
        return self

    def reload(self) -> ChatPage:
        """Reload the tab (what the page kept in memory is gone; localStorage stays)."""
        self.page.reload()
        expect(self.status).to_have_text("Connected", timeout=WAIT_MS)
        return self

    def device(self) -> str | None:
        """The device id this browser logs in with (kept in localStorage)."""
        return self.page.evaluate("localStorage.getItem('chatserver.device')")

    def scroll_messages_to_top(self) -> None:
        self.by("messages").evaluate("list => { list.scrollTop = 0; }")

    def fill_login(self, who: str, password: str) -> None:
        self.by("login-who").fill(who)
        self.by("login-password").fill(password)

    def register(self, name: str, password: str) -> int:
        """Register through the page (which then logs in); returns the new id."""
        self.fill_login(name, password)
        self.by("register-button").click()
        self.expect_logged_in()
        return self.my_id()

    def log_in(self, who: str | int, password: str) -> None:
        self.fill_login(str(who), password)
        self.by("login-button").click()
        self.expect_logged_in()

    def expect_logged_in(self) -> None:
        expect(self.by("chat-view")).to_be_visible(timeout=WAIT_MS)
        expect(self.status).to_have_attribute("data-state", "online", timeout=WAIT_MS)

    def log_out(self) -> None:
        self.by("logout-button").click()
        expect(self.by("login-view")).to_be_visible(timeout=WAIT_MS)

    def add_friend(self, user_id: int) -> None:
        self.by("add-friend-id").fill(str(user_id))
        self.by("add-friend-id").press("Enter")
        expect(self.by("notices")).to_contain_text(
            f"Friend request sent to id {user_id}", timeout=WAIT_MS
        )

    def open_chat_with(self, user_id: int) -> None:
        self.by("new-chat-id").fill(str(user_id))
        self.by("new-chat-button").click()
        expect(self.by("message-input")).to_be_focused(timeout=WAIT_MS)

    def open_conversation(self, kind: str, conversation_id: int) -> None:
        """kind: "u" for a one-to-one chat, "g" for a group."""
        self.by(f"conversation-{kind}-{conversation_id}").get_by_role("button").first.click()
        expect(self.by("message-input")).to_be_focused(timeout=WAIT_MS)

    def close_conversation(self) -> None:
        """Leave the open conversation (the back button; on a wide screen it is not shown)."""
        self.page.evaluate("document.getElementById('back-button').click()")
        expect(self.by("conversation-title")).to_have_text("Pick a chat", timeout=WAIT_MS)

    def send(self, text: str) -> None:
        """Type into the composer, press Enter, and wait for the server's ACK ("sent")."""
        self.by("message-input").fill(text)
        self.by("message-input").press("Enter")
        mine = self.by("messages").locator(".message.mine").filter(has_text=text)
        expect(mine.get_by_test_id("message-status")).to_have_text("sent", timeout=WAIT_MS)

    def remove_friend(self, user_id: int) -> None:
        """Remove, confirm, and wait until the friend has left the list."""
        self.by(f"remove-friend-{user_id}").click()
        expect(self.by(f"removal-{user_id}")).to_be_visible(timeout=WAIT_MS)
        self.by(f"confirm-remove-{user_id}").click()
        expect(self.by(f"friend-{user_id}")).to_have_count(0, timeout=WAIT_MS)

    def create_group(self, name: str, description: str = "") -> int:
        self.by("create-group-name").fill(name)
        self.by("create-group-desc").fill(description)
        self.by("create-group-button").click()
        expect(self.by("conversation-title")).to_have_text(name, timeout=WAIT_MS)
        group = self.by("groups").locator("li").filter(has_text=name)
        testid = group.get_attribute("data-testid", timeout=WAIT_MS) or ""
        return int(testid.removeprefix("group-"))

    def join_group(self, group_id: int) -> None:
        self.by("join-group-id").fill(str(group_id))
        self.by("join-group-button").click()
        expect(self.by(f"group-{group_id}")).to_be_visible(timeout=WAIT_MS)

    def assert_healthy(self) -> None:
        """No uncaught exception in the page, and nothing refused by its security policy."""
        assert not self.page_errors, f"the page threw: {self.page_errors}"
        refused = [e for e in self.console_errors if "Content Security Policy" in e]
        assert not refused, f"the page broke its content security policy: {refused}"


# --------------------------------------------------------------------------- the screenshot


def make_screenshot(path: Path) -> None:
    """Save a screenshot of the page in use (docs/web-client.png), on a throwaway server."""
    import tempfile

    from playwright.sync_api import sync_playwright

    from tests.integration.conftest import Chat, User

    with tempfile.TemporaryDirectory() as directory:
        web = WebServer(Path(directory))
        web.start()
        chat = Chat(web.current)
        try:
            alice, bob, carol, dave = (
                User(chat.register(name, f"{name}-pw"), name, f"{name}-pw")
                for name in ("alice", "bob", "carol", "dave")
            )
            ca, cb, cc, cd = chat.online_all(alice, bob, carol, dave)
            chat.befriend(ca, cb)
            chat.befriend(ca, cc)
            group_id = ca.ok(
                {"msgid": 8, "groupname": "weekend-hike", "groupdesc": "Saturday, Mont Salève"}
            )["groupid"]
            for member in (cb, cc):
                member.ok({"msgid": 9, "groupid": group_id})
            ca.logout()
            cd.ok({"msgid": 7, "friendid": alice.id})
            cc.ok({"msgid": 10, "groupid": group_id, "msg": "Saturday 9:00 at the trailhead?"})
            cb.ok({"msgid": 10, "groupid": group_id, "msg": "Works for me. I'll bring the map."})
            cb.ok({"msgid": 6, "toid": alice.id, "msg": "Did you get the tickets?"})
            cc.logout()
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                     args=["--no-sandbox"])
                context = browser.new_context(viewport={"width": 1000, "height": 640})
                context.set_default_timeout(WAIT_MS)
                page = ChatPage(context.new_page(), web.url).open()
                page.log_in(alice.id, alice.password)
                page.open_conversation("g", group_id)
                page.send("Great, see you there! I'll bring snacks.")
                page.by("group-members").locator("summary").click()
                for dismiss in page.page.locator(".notice .dismiss").all():
                    dismiss.click()
                page.page.screenshot(path=str(path))
                browser.close()
        finally:
            chat.close_all()
            web.close()


if __name__ == "__main__":
    import sys

    make_screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/web-client.png"))
