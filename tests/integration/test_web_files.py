"""Files on the web page (issue 14), in headless Chromium: one page attaches a picture, the
other page shows it inline as a thumbnail; another file shows as a link with name and size.
A server process with SQLite and the default folder beside it."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.integration import web_helpers
from tests.integration.conftest import unique_name
from tests.integration.web_helpers import CHROMIUM, WAIT_MS, ChatPage, WebServer, new_context

# The fixtures the browser tests share.
browser, web = web_helpers.browser, web_helpers.web

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium"),
]


def png(width: int, height: int) -> bytes:
    """A real PNG, all red."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\0" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def open_page(browser: Browser, web: WebServer) -> ChatPage:
    return ChatPage(new_context(browser).new_page(), web.url).open()


def test_one_page_attaches_a_picture_the_other_shows_it_inline(
    browser: Browser, web: WebServer
) -> None:
    alice, bob = open_page(browser, web), open_page(browser, web)
    alice_id = alice.register(unique_name("alice"), "pw-alice")
    bob_id = bob.register(unique_name("bob"), "pw-bob")
    alice.open_chat_with(bob_id)
    alice.by("file-input").set_input_files(
        files=[{"name": "red.png", "mimeType": "image/png", "buffer": png(40, 30)}]
    )
    mine = alice.by("messages").locator(".message.mine")
    expect(mine.get_by_test_id("message-status")).to_have_text("sent", timeout=WAIT_MS)
    bob.open_conversation("u", alice_id)
    image = bob.by("messages").get_by_test_id("message-image")
    expect(image).to_have_count(1, timeout=WAIT_MS)
    expect(image).to_have_attribute("alt", "red.png", timeout=WAIT_MS)
    bob.page.wait_for_function(
        "el => el.complete && el.naturalWidth === 40", arg=image.element_handle(), timeout=WAIT_MS
    )
    # A file that is not a picture is a link with its name and size.
    alice.by("file-input").set_input_files(
        files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"x" * 2048}]
    )
    link = bob.by("messages").get_by_test_id("message-file")
    expect(link).to_have_text("notes.txt (2 KiB)", timeout=WAIT_MS)
    bob.page.wait_for_function("el => el.href.includes('/files/')", arg=link.element_handle(),
                               timeout=WAIT_MS)
    for page in (alice, bob):
        page.assert_healthy()
        page.page.context.close()
    files = Path(web.directory) / "chat-files"
    assert sum(1 for p in files.rglob("*") if p.is_file()) == 2
