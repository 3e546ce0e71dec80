"""People in `chatserver client` processes, typing into pipes, against a real server."""

import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.integration import conftest
from tests.integration.conftest import HOST, ServerProcess, unique_name

pytestmark = pytest.mark.integration


class Terminal:
    """A terminal client process: type lines, wait for text to appear."""

    def __init__(
        self, port: int, device: str | None = None, args: Sequence[str] = (), *,
        sigint: signal.Handlers | None = None,
    ) -> None:
        """sigint: the disposition of SIGINT the process starts with (a shell's foreground
        job: SIG_DFL; a background job of a non-interactive shell: SIG_IGN), else pytest's."""
        command = [sys.executable, "-m", "chatserver", "client", "--host", HOST]
        command += ["--port", str(port), *(["--device", device] if device else []), *args]
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            preexec_fn=None if sigint is None else lambda: signal.signal(signal.SIGINT, sigint),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def type(self, *lines: str) -> None:
        assert self.proc.stdin is not None
        for line in lines:
            self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if text in line:
                return line
        shown = "\n".join(self.seen)
        raise AssertionError(f"{text!r} never appeared; the terminal showed:\n{shown}")

    def close(self) -> int:
        if self.proc.poll() is None:
            self.type("quit")
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def register(terminal: Terminal, name: str) -> int:
    terminal.type("2", name, "secret")
    line = terminal.wait_for("your user id is")
    terminal.wait_for("3. quit")  # the menu again
    return int(line.rsplit(" ", 1)[1])


def test_two_people_register_befriend_chat_and_group_chat(server: ServerProcess) -> None:
    assert server.port is not None
    alice_name, bob_name = unique_name("alice"), unique_name("bob")
    a, b = Terminal(server.port), Terminal(server.port)
    try:
        alice, bob = register(a, alice_name), register(b, bob_name)
        a.type("1", str(alice), "secret")
        a.wait_for(f"id: {alice} name: {alice_name}")
        b.type("1", bob_name, "secret")
        b.wait_for(f"id: {bob} name: {bob_name}")

        a.type(f"addfriend:{bob}")
        b.wait_for(f"{alice_name} asks to be your friend")
        b.type(f"accept:{alice}")
        b.wait_for(f"[{alice}] {alice_name} is now your friend")
        a.wait_for(f"{bob_name} accepted")
        a.type(f"addfriend:{bob}")
        a.wait_for(f"[{bob}] {bob_name} is already your friend")

        a.type(f"chat:{bob}:你好, bob 😀")
        b.wait_for(f"{alice_name} said: 你好, bob 😀")

        group = unique_name("team")
        a.type(f"creategroup:{group}:our team")
        gid = int(a.wait_for("created group").split("[", 1)[1].split("]", 1)[0])
        b.type(f"addgroup:{gid}")
        b.wait_for(f"joined group [{gid}]")
        b.type(f"addgroup:{gid}")
        b.wait_for(f"you are already in group [{gid}]")
        a.type(f"addgroup:{gid}")
        a.wait_for(f"you are already in group [{gid}] {group}")
        a.type(f"groupchat:{gid}:hello team")
        b.wait_for("hello team")

        b.type("loginout")
        a.wait_for(f"[{bob}] {bob_name} is offline")
        a.type(f"chat:{bob}:while you were away")
        time.sleep(0.3)
        b.type("1", str(bob), "secret")
        a.wait_for(f"[{bob}] {bob_name} is online")
        b.wait_for("while you were away")

        b.type("chat:notanumber:hi", "bogus")
        b.wait_for("usage: chat:ID:MESSAGE")
        b.wait_for("invalid input command")
    finally:
        assert a.close() == 0
        assert b.close() == 0


def test_ctrl_c_ends_a_terminal_whose_piped_stdin_is_still_open(server: ServerProcess) -> None:
    """Ctrl+C (SIGINT) ends the client at once, exit 130, while the pipe it reads stays open:
    the thread that reads the pipe is a daemon and holds nothing up, at the menu or logged in.
    A client that starts with SIGINT ignored (a background job of a non-interactive shell,
    `(sleep 30) | chatserver client &` in a script) keeps ignoring it, as programs do, and ends
    when its input does (README, "The terminal client")."""
    assert server.port is not None
    at_menu = Terminal(server.port, sigint=signal.SIG_DFL)
    logged_in = Terminal(server.port, sigint=signal.SIG_DFL)
    background = Terminal(server.port, sigint=signal.SIG_IGN)
    try:
        name = unique_name("ctrlc")
        uid = register(logged_in, name)
        logged_in.type("1", str(uid), "secret")
        logged_in.wait_for(f"id: {uid} name: {name}")
        at_menu.wait_for("3. quit")
        background.wait_for("3. quit")
        for terminal in (at_menu, logged_in, background):
            terminal.proc.send_signal(signal.SIGINT)
        for terminal in (at_menu, logged_in):
            started = time.monotonic()
            assert terminal.proc.wait(timeout=10) == 130
            print(f"ended {time.monotonic() - started:.2f} s after SIGINT")
        with pytest.raises(subprocess.TimeoutExpired):
            background.proc.wait(timeout=0.5)
        assert background.proc.stdin is not None
        background.proc.stdin.close()  # its input ends: it quits
        assert background.proc.wait(timeout=10) == 0
    finally:
        for terminal in (at_menu, logged_in, background):
            if terminal.proc.poll() is None:
                terminal.proc.kill()
                terminal.proc.wait()


@pytest.fixture
def restartable_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server on SQLite, so that its users outlive a restart."""
    server = ServerProcess(f"sqlite:///{tmp_path / 'chat.db'}", tmp_path / "server.log").start()
    yield server
    server.stop()
    server.assert_no_traceback()


def restart_on_the_same_port(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILLs the server, waits a moment, and starts it again where clients will look for it."""
    port = server.port
    server.kill()
    time.sleep(1.0)  # the clients find nobody there for a while
    ports = iter([port, port, port])  # start() tries three times
    any_port = conftest.free_port
    monkeypatch.setattr(conftest, "free_port", lambda: next(ports, None) or any_port())
    server.start()
    assert server.port == port


def test_terminals_reconnect_and_log_in_again_when_the_server_restarts(
    restartable_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = restartable_server
    assert server.port is not None
    address = f"{HOST}:{server.port}"
    alice_name, bob_name = unique_name("alice"), unique_name("bob")
    a, b = Terminal(server.port), Terminal(server.port)
    try:
        alice, bob = register(a, alice_name), register(b, bob_name)
        a.type("1", str(alice), "secret")
        a.wait_for(f"id: {alice} name: {alice_name}")
        b.type("1", bob_name, "secret")
        b.wait_for(f"id: {bob} name: {bob_name}")

        started = time.monotonic()
        restart_on_the_same_port(server, monkeypatch)
        a.wait_for("connection lost, reconnecting...")
        b.wait_for("connection lost, reconnecting...")
        a.type(f"chat:{bob}:into the void")
        a.wait_for(f"chat: not connected (reconnecting to {address}), nothing was sent")
        # At most 10 s between attempts, once the server is back.
        a.wait_for(f"reconnected to {address} and logged in again", timeout=30)
        b.wait_for(f"reconnected to {address} and logged in again", timeout=30)
        print(f"both terminals back {time.monotonic() - started:.1f} s after the SIGKILL")

        a.type(f"chat:{bob}:after the restart")
        b.wait_for(f"[{alice}] {alice_name} said: after the restart")
        b.type(f"chat:{alice}:and back")
        a.wait_for(f"[{bob}] {bob_name} said: and back")
    finally:
        assert a.close() == 0
        assert b.close() == 0
    for terminal in (a, b):
        assert terminal.seen.count("connection lost, reconnecting...") == 1
    assert not [line for line in b.seen if "into the void" in line]


def test_one_user_on_two_devices_sees_everything_on_both_and_history_after_restarts(
    restartable_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = restartable_server
    assert server.port is not None
    alice_name, carol_name = unique_name("alice"), unique_name("carol")
    pc, phone = Terminal(server.port, "pc"), Terminal(server.port, "phone")
    c = Terminal(server.port)
    later: Terminal | None = None
    try:
        alice, carol = register(pc, alice_name), register(c, carol_name)
        for terminal in (pc, phone):
            terminal.type("1", str(alice), "secret")
            terminal.wait_for(f"id: {alice} name: {alice_name}")
        c.type("1", str(carol), "secret")
        c.wait_for(f"id: {carol} name: {carol_name}")

        # A third user's message shows on both devices; what one device sends, the other shows.
        c.type(f"chat:{alice}:hello both of you")
        pc.wait_for(f"[{carol}] {carol_name} said: hello both of you")
        phone.wait_for(f"[{carol}] {carol_name} said: hello both of you")
        pc.type(f"chat:{carol}:hi from my pc")
        c.wait_for(f"[{alice}] {alice_name} said: hi from my pc")
        phone.wait_for(f"you -> [{carol}]: hi from my pc")
        assert not [line for line in pc.seen if "you ->" in line]  # typed there, not echoed

        restart_on_the_same_port(server, monkeypatch)
        for terminal in (pc, phone, c):
            terminal.wait_for("logged in again", timeout=30)
        phone.type(f"history:{carol}")
        phone.wait_for(f"messages with [{carol}]")
        phone.wait_for(f"[{carol}] {carol_name} said: hello both of you")
        phone.wait_for(f"you -> [{carol}]: hi from my pc")

        # A new terminal process on the phone device: the conversation is still there.
        assert phone.close() == 0
        later = Terminal(server.port, "phone")
        later.type("1", alice_name, "secret")
        later.wait_for(f"id: {alice} name: {alice_name}")
        later.type(f"history:{carol}")
        later.wait_for(f"[{carol}] {carol_name} said: hello both of you")
        later.wait_for(f"you -> [{carol}]: hi from my pc")
        c.type(f"chat:{alice}:still here")
        later.wait_for(f"[{carol}] {carol_name} said: still here")
        pc.wait_for(f"[{carol}] {carol_name} said: still here")
    finally:
        for terminal in (pc, phone, c, *([later] if later else [])):
            assert terminal.close() == 0
