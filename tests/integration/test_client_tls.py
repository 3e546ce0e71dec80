"""The client library and the terminal client against `serve --tls-cert/--tls-key`."""

import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from chatserver.entrypoints.client.library import (
    DirectMessage,
    TLSHandshakeError,
    connect,
)
from tests.integration.conftest import HOST, ServerProcess, free_port, unique_name
from tests.integration.test_terminal_sessions import Terminal, register

pytestmark = pytest.mark.integration


def self_signed(folder: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A certificate for name and 127.0.0.1, and its key (as test_serve_tls_and_signals's)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    return self_signed(tmp_path / "server")[0]


@pytest.fixture
def tls_server(tmp_path: Path, certificate: Path) -> Iterator[ServerProcess]:
    key = certificate.with_name("key.pem")
    server = ServerProcess(
        "memory://", tmp_path / "tls.log",
        ["--tls-cert", str(certificate), "--tls-key", str(key), "--ws-port", str(free_port()),
         "--files", str(tmp_path / "files")],
    ).start()
    yield server
    server.stop()
    server.assert_no_traceback()


def web_port(server: ServerProcess) -> int:
    return int(server.extra_args[server.extra_args.index("--ws-port") + 1])


def test_the_library_chats_both_ways_and_moves_files_over_tls(
    tls_server: ServerProcess, certificate: Path, tmp_path: Path
) -> None:
    assert tls_server.port is not None
    port, trusted = tls_server.port, ssl.create_default_context(cafile=str(certificate))
    upload = tmp_path / "hello.txt"
    upload.write_bytes(b"over https\n" * 1000)

    async def run() -> None:
        web = web_port(tls_server)
        async with connect(HOST, port, tls=trusted, web_port=web) as alice, \
                connect(HOST, port, tls=trusted, server_hostname="localhost",
                        web_port=web) as bob:
            assert alice.web_url == f"https://{HOST}:{web_port(tls_server)}"
            alice_id = await alice.register(unique_name("alice"), "pw")
            bob_id = await bob.register(unique_name("bob"), "pw")
            await alice.login(alice_id, "pw", device="a")
            await bob.login(bob_id, "pw", device="b")
            await alice.send_chat(bob_id, "hello over TLS")
            heard = await bob.next_event()
            assert isinstance(heard, DirectMessage) and heard.text == "hello over TLS"
            await bob.send_chat(alice_id, "and back")
            answer = await alice.next_event()
            assert isinstance(answer, DirectMessage) and answer.text == "and back"
            # Files go up and come down over https, checked against the same certificate.
            # (bob's certificate check is for server_hostname, "localhost", there too.)
            await alice.send_file(upload, to_id=bob_id, text="a file")
            carried = await bob.next_event()
            assert isinstance(carried, DirectMessage) and carried.file is not None
            saved = await bob.download(carried.file, tmp_path / "down")
            assert saved.read_bytes() == upload.read_bytes()

    anyio.run(run)


def test_a_certificate_the_client_does_not_trust_is_one_clear_error(
    tls_server: ServerProcess, tmp_path: Path
) -> None:
    assert tls_server.port is not None
    port = tls_server.port
    other = ssl.create_default_context(cafile=str(self_signed(tmp_path / "other")[0]))

    async def refused(**tls: object) -> TLSHandshakeError:
        with pytest.raises(TLSHandshakeError) as caught:
            async with connect(HOST, port, request_timeout=5, **tls):  # type: ignore[arg-type]
                raise AssertionError("connected")
        return caught.value

    async def run() -> None:
        for settings in ({"tls": other}, {"tls": True}):
            error = await refused(**settings)
            assert error.untrusted, error
            assert str(error).startswith(f"TLS handshake with {HOST}:{port} failed: the "
                                         "server's certificate is not trusted ("), error
        trusted = ssl.create_default_context(cafile=str(tls_server.extra_args[1]))
        wrong_name = await refused(tls=trusted, server_hostname="chat.example.com")
        assert wrong_name.untrusted and "chat.example.com" in str(wrong_name), wrong_name

    anyio.run(run)


def test_tls_to_a_port_without_tls_is_one_clear_error(tmp_path: Path) -> None:
    plain = ServerProcess("memory://", tmp_path / "plain.log").start()
    try:
        assert plain.port is not None
        port = plain.port

        async def run() -> None:
            with pytest.raises(TLSHandshakeError) as caught:
                async with connect(HOST, port, tls=True, request_timeout=5):
                    raise AssertionError("connected")
            assert not caught.value.untrusted
            assert "does not speak TLS on that port" in str(caught.value), caught.value

        anyio.run(run)
    finally:
        plain.stop()
        plain.assert_no_traceback()


def test_the_terminal_client_logs_in_and_chats_over_tls(
    tls_server: ServerProcess, certificate: Path
) -> None:
    assert tls_server.port is not None
    port, trusted = tls_server.port, ssl.create_default_context(cafile=str(certificate))
    name = unique_name("term")
    terminal = Terminal(port, args=["--tls", "--tls-ca", str(certificate)])
    try:
        me = register(terminal, name)
        terminal.type("1", str(me), "secret")
        terminal.wait_for(f"id: {me} name: {name}")

        async def chat() -> None:
            async with connect(HOST, port, tls=trusted) as friend:
                friend_id = await friend.register(unique_name("friend"), "pw")
                await friend.login(friend_id, "pw")
                terminal.type(f"chat:{friend_id}:hi over TLS from the terminal")
                heard = await friend.next_event()
                assert isinstance(heard, DirectMessage), heard
                assert (heard.sender_id, heard.text) == (me, "hi over TLS from the terminal")
                await friend.send_chat(me, "heard you")
                await anyio.to_thread.run_sync(terminal.wait_for, "said: heard you")

        anyio.run(chat)
    finally:
        assert terminal.close() == 0


def run_client(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chatserver", "client", "--host", HOST, *args],
                          input="", capture_output=True, text=True, timeout=60)


def test_the_terminal_client_says_in_one_line_why_tls_failed(
    tls_server: ServerProcess, tmp_path: Path
) -> None:
    assert tls_server.port is not None
    port = str(tls_server.port)
    untrusted = run_client("--port", port, "--tls")
    assert untrusted.returncode == 1, untrusted
    assert untrusted.stderr == (
        f"cannot connect to {HOST}:{port}: TLS: the server's certificate is not trusted "
        "(self-signed certificate); trust it with --tls-ca FILE (the server's certificate or "
        "its CA)\n")
    other = self_signed(tmp_path / "other")[0]
    wrong = run_client("--port", port, "--tls-ca", str(other))  # --tls-ca implies --tls
    assert wrong.returncode == 1 and "certificate is not trusted" in wrong.stderr, wrong
    assert wrong.stderr.count("\n") == 1, wrong.stderr
    missing = run_client("--port", port, "--tls-ca", str(tmp_path / "nowhere.pem"))
    assert (missing.returncode, missing.stderr) == (
        2, f"chatserver: --tls-ca {tmp_path / 'nowhere.pem'}: No such file or directory\n")
