"""The DevTools driver (tests/e2e/browser.py) against a tiny raw-asyncio HTTP server: a sign-in
form with a CSRF field, a redirect that sets a session cookie, a page that shows the cookie,
and a page that writes to the console. Needs Chromium only, no stack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import escape
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from tests.e2e.browser import Browser

pytestmark = pytest.mark.e2e

FORM = """<!doctype html><html><head><title>Sign in</title></head><body>
<form method="POST" action="/login">
  <input name="username" required><input name="password" type="password" required>
  <input type="hidden" name="csrf_token" value="abc"><button type="submit">Sign in</button>
</form></body></html>"""
NOISY = """<!doctype html><html><head><title>Noisy</title></head><body><p>noise</p>
<script>console.error("boom")</script></body></html>"""


def page(status: int, body: str = "", headers: dict[str, str] | None = None) -> bytes:
    data = body.encode()
    head = {"Content-Type": "text/html; charset=utf-8", "Content-Length": str(len(data))}
    lines = "".join(f"{k}: {v}\r\n" for k, v in {**head, **(headers or {})}.items())
    return f"HTTP/1.1 {status} X\r\n{lines}\r\n".encode() + data


def answer(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    if (method, path) == ("GET", "/form"):
        return page(200, FORM)
    if (method, path) == ("POST", "/login"):
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if form.get("csrf_token") != "abc" or not form.get("password"):
            return page(403, "<p>bad form</p>")
        cookie = f"s={form['username']}; Path=/; HttpOnly; SameSite=Lax"
        return page(303, headers={"Set-Cookie": cookie, "Location": "/me"})
    if (method, path) == ("GET", "/me"):
        jar = SimpleCookie(headers.get("cookie", ""))
        who = jar["s"].value if "s" in jar else "nobody"
        return page(200, f'<!doctype html><title>Me</title><p id="me">{escape(who)}</p>')
    if (method, path) == ("GET", "/noisy"):
        return page(200, NOISY)
    return page(404, "<p>not found</p>")


@asynccontextmanager
async def site() -> AsyncIterator[tuple[str, list[str]]]:
    """The server's base URL, and each request as "METHOD /path" in the order they came."""
    seen: list[str] = []
    handlers: set[asyncio.Task[None]] = set()
    writers: set[asyncio.StreamWriter] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        writers.add(writer)
        try:
            while True:  # keep-alive: Chromium sends several requests on one connection
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, target, _ = head[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, v in (line.split(":", 1) for line in head[1:] if ":" in line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                path = target.split("?", 1)[0]
                seen.append(f"{method} {path}")
                writer.write(answer(method, path, headers, body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writers.discard(writer)
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen
    finally:
        server.close()
        for writer in list(writers):  # the browser's idle keep-alive connections end their handlers
            writer.close()
        await asyncio.gather(*handlers)
        await server.wait_closed()


async def test_signs_in_through_a_form_and_reads_the_console(tmp_path: Path) -> None:
    async with site() as (base, seen), Browser.launch(tmp_path / "profile") as browser:
        assert await browser.goto(f"{base}/form") == f"{base}/form"
        assert browser.last_status == 200
        assert await browser.evaluate("document.title") == "Sign in"

        url = await browser.submit_form("form", {"username": "wang", "password": "s3cret"})
        assert url == f"{base}/me"
        assert '<p id="me">wang</p>' in await browser.dom()
        assert browser.statuses[f"{base}/login"] == 303
        assert browser.last_status == 200
        assert "POST /login" in seen
        cookies = {c["name"]: c for c in await browser.cookies()}
        assert cookies["s"]["value"] == "wang"
        assert cookies["s"]["httpOnly"]
        assert browser.console == []

        assert await browser.goto(f"{base}/me") == f"{base}/me"
        assert await browser.evaluate("document.getElementById('me').textContent") == "wang"
        assert browser.console == []

        await browser.goto(f"{base}/noisy")
        assert any("boom" in line for line in browser.console), browser.console
        assert "error: boom" in browser.console
        browser.clear_console()
        assert browser.console == []
