"""A tiny Chrome DevTools Protocol driver for Debian's headless Chromium, for end-to-end tests.

Use it when a test must act as a person in a browser: sign in through a real form (cookies, a
CSRF field, a redirect), open pages as that user, read what the console said
(tests/e2e/test_dashboard_browser.py, tests/e2e/test_dashboard_signin.py).

    async with Browser.launch(tmp_path / "profile") as browser:
        await browser.goto(f"{base}/signin")
        await browser.submit_form("form", {"username": "wang", "password": "..."})
        assert "wang" in await browser.dom() and browser.console == []

Every wait has a deadline (`timeout`, 30 s unless told) and fails naming what it waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

T = TypeVar("T")
Event = dict[str, Any]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [  # headless, and nothing of its own on the network
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",
]  # fmt: skip
TIMEOUT = 30.0
MAX_MESSAGE = 64 * 1024 * 1024  # a whole DOM comes back as one message


class CDPError(RuntimeError):
    """The browser refused a command, a navigation failed, or a script threw in the page."""


class Browser:
    """One headless Chromium with one page, driven over the DevTools protocol; make it with
    `Browser.launch`.

    `console` holds each console message ("error: boom"), uncaught exception ("exception: ...")
    and browser log entry ("error: text (url)") since the start or `clear_console()`, except two
    kinds kept in `hidden`: verbose entries (hints such as "Input elements should have
    autocomplete attributes", which DevTools hides too), and the failure of /favicon.ico, which
    Chromium asks for by itself some time after a load (so it would land on the next page).
    `statuses` maps each main-document URL to its HTTP status (redirects such as a 303 too);
    `last_status` is that of the latest one.
    """

    def __init__(self, proc: asyncio.subprocess.Process, ws: ClientConnection, log: Path) -> None:
        self._proc, self._ws, self._log = proc, ws, log
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[str, asyncio.Future[Event]]] = {}
        self._waiters: list[tuple[str, asyncio.Future[Event]]] = []
        self._main_frame = ""
        self.console: list[str] = []
        self.hidden: list[str] = []
        self.statuses: dict[str, int] = {}
        self.last_status: int | None = None
        self._reader = asyncio.create_task(self._read(), name="cdp-reader")

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, profile_dir: Path, *, timeout: float = TIMEOUT) -> AsyncIterator[Browser]:
        """Chromium on about:blank, its profile and its stderr (chromium.log) in ``profile_dir``;
        on exit the socket is closed and the browser ended (SIGTERM, then SIGKILL)."""
        port_file, log = _fresh_profile(profile_dir)
        args = [*FLAGS, "--remote-debugging-port=0", f"--user-data-dir={profile_dir}"]
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                CHROMIUM, *args, "about:blank", stdin=asyncio.subprocess.DEVNULL, stdout=err,
                stderr=err, start_new_session=True,  # a process group: its helpers end with it
            )  # fmt: skip
        try:
            url = await _page_socket(proc, port_file, log, timeout)
            async with connect(url, max_size=MAX_MESSAGE, ping_interval=None) as ws:
                browser = cls(proc, ws, log)
                try:
                    await browser._enable(timeout)
                    yield browser
                finally:
                    browser._reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await browser._reader
        finally:
            await _end(proc)

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float = TIMEOUT
    ) -> Event:
        """One raw DevTools command and its result, for what the methods below don't cover."""
        if self._reader.done():
            raise ConnectionError(f"{method}: the DevTools connection is gone; {_tail(self._log)}")
        ident = next(self._ids)
        answer: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._pending[ident] = (method, answer)
        try:
            await self._ws.send(json.dumps({"id": ident, "method": method, "params": params or {}}))
            return await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            raise TimeoutError(f"chromium did not answer {method} in {timeout} s") from None
        finally:
            self._pending.pop(ident, None)

    async def goto(self, url: str, *, timeout: float = TIMEOUT) -> str:
        """Open ``url``, wait for its load event, and give the URL it ended on (after redirects).
        Not for a change of #fragment only: that loads nothing."""

        async def navigate() -> None:
            sent = await self.send("Page.navigate", {"url": url}, timeout=timeout)
            if sent.get("errorText"):
                raise CDPError(f"navigating to {url}: {sent['errorText']}")

        return await self._loading(navigate(), f"load event of {url}", timeout)

    async def evaluate(self, expression: str, *, timeout: float = TIMEOUT) -> Any:
        """The JSON value of ``expression`` in the page, a promise awaited (undefined is None);
        CDPError with the exception's text if it throws."""
        return await self._evaluate(expression, repr(expression[:120]), timeout)

    async def dom(self) -> str:
        """The page's HTML as it is now, after its scripts ran (what `--dump-dom` prints)."""
        return str(await self.evaluate("document.documentElement.outerHTML"))

    async def submit_form(
        self, selector: str, fields: dict[str, str], *, timeout: float = TIMEOUT
    ) -> str:
        """Set the form's inputs by name (the others, a hidden CSRF token say, keep the page's
        values), submit it as a user would (`requestSubmit`, so its submit handlers and
        validation run), wait for the page it leads to, and give that page's URL."""
        script = f"""(() => {{
          const form = document.querySelector({json.dumps(selector)});
          if (!(form instanceof HTMLFormElement)) throw new Error("no form matches");
          for (const [name, value] of Object.entries({json.dumps(fields)})) {{
            const input = form.elements.namedItem(name);
            if (!input) throw new Error(`the form has no field ${{name}}`);
            input.value = value;
            input.dispatchEvent(new Event("input", {{bubbles: true}}));
            input.dispatchEvent(new Event("change", {{bubbles: true}}));
          }}
          const invalid = [...form.elements].filter((e) => e.willValidate && !e.checkValidity());
          if (invalid.length) throw new Error(`invalid fields: ${{invalid.map((e) => e.name)}}`);
          const button = form.querySelector("[type=submit]");
          if (form.requestSubmit) form.requestSubmit(button || undefined);
          else if (button) button.click();
          else form.submit();
        }})()"""
        submitting = self._evaluate(script, f"submitting {selector!r}", timeout)
        return await self._loading(submitting, f"page loaded by submitting {selector!r}", timeout)

    async def cookies(self) -> list[dict[str, Any]]:
        """Every cookie the browser holds, HttpOnly ones too (name, value, domain, path...)."""
        return list((await self.send("Network.getAllCookies"))["cookies"])

    def clear_console(self) -> None:
        """Forget what the console said so far (`console` and `hidden`)."""
        self.console.clear()
        self.hidden.clear()

    async def _evaluate(self, expression: str, what: str, timeout: float) -> Any:
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        reply = await self.send("Runtime.evaluate", params, timeout=timeout)
        if "exceptionDetails" in reply:
            raise CDPError(f"the page threw on {what}: {_exception_text(reply)}")
        return reply["result"].get("value")

    async def _enable(self, timeout: float) -> None:
        for domain in ("Page", "Runtime", "Log", "Network"):
            await self.send(f"{domain}.enable")
        self._main_frame = (await self.send("Page.getFrameTree"))["frameTree"]["frame"]["id"]
        # about:blank's own load event could still come and end the first goto's wait early
        blank = "document.readyState === 'complete' || null"
        await _poll(lambda: self.evaluate(blank), timeout, lambda: "about:blank did not load")

    async def _loading(self, action: Awaitable[Any], what: str, timeout: float) -> str:
        """Run ``action`` and wait for the page load it causes; the URL then."""
        self.last_status = None
        loaded: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._waiters.append(entry := ("Page.loadEventFired", loaded))  # before the action
        try:
            await action
            await asyncio.wait_for(loaded, timeout)
        except TimeoutError:
            # a navigation still under way holds back every later command until it commits
            with contextlib.suppress(TimeoutError, CDPError):
                await self.send("Page.stopLoading", timeout=5)
            raise TimeoutError(f"no {what} in {timeout} s") from None
        finally:
            self._waiters.remove(entry)
        return str(await self.evaluate("location.href"))

    async def _read(self) -> None:
        why = "closed"
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                method, answer = self._pending.get(message.get("id", -1), ("", None))
                if answer is not None and not answer.done():
                    if "error" in message:
                        answer.set_exception(CDPError(f"{method}: {message['error']}"))
                    else:
                        answer.set_result(message.get("result", {}))
                elif "method" in message:
                    self._on_event(message["method"], message.get("params", {}))
        except ConnectionClosed as closed:
            why = str(closed)
        except Exception as error:
            why = f"reading it failed: {error!r}"
            raise
        finally:
            gone = ConnectionError(f"the DevTools socket: {why}; {_tail(self._log)}")
            for _, future in [*self._pending.values(), *self._waiters]:
                if not future.done():
                    future.set_exception(gone)

    def _on_event(self, method: str, params: Event) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(_describe(arg) for arg in params.get("args", []))
            self.console.append(f"{params.get('type', 'log')}: {text}")
        elif method == "Runtime.exceptionThrown":
            self.console.append(f"exception: {_exception_text(params)}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            where = f" ({entry['url']})" if entry.get("url") else ""
            favicon = entry.get("source") == "network" and _is_favicon(entry.get("url", ""))
            quiet = favicon or entry.get("level") == "verbose"
            (self.hidden if quiet else self.console).append(
                f"{entry.get('level')}: {entry.get('text')}{where}"
            )
        elif params.get("type") == "Document" and params.get("frameId") == self._main_frame:
            # a redirect shows only as the next request's redirectResponse
            response = params.get("redirectResponse") or params.get("response")
            if method in ("Network.requestWillBeSent", "Network.responseReceived") and response:
                self.statuses[response["url"]] = self.last_status = response["status"]
        for name, future in self._waiters:
            if name == method and not future.done():
                future.set_result(params)


def _describe(arg: dict[str, Any]) -> str:
    """A console argument as DevTools shows it: a primitive's value, else a description."""
    for key in ("value", "unserializableValue", "description"):
        if key in arg:
            return arg[key] if isinstance(arg[key], str) else json.dumps(arg[key])
    return str(arg.get("type"))


def _is_favicon(url: str) -> bool:
    return urlsplit(url).path == "/favicon.ico"


def _exception_text(params: Event) -> str:
    details = params.get("exceptionDetails", {})
    return str(details.get("exception", {}).get("description") or details.get("text"))


def _fresh_profile(profile_dir: Path) -> tuple[Path, Path]:
    profile_dir.mkdir(parents=True, exist_ok=True)
    port_file = profile_dir / "DevToolsActivePort"
    port_file.unlink(missing_ok=True)  # an earlier run's port is no sign of this one
    return port_file, profile_dir / "chromium.log"


def _port(port_file: Path) -> int | None:
    """The port in DevToolsActivePort, once Chromium wrote it whole (port, then path)."""
    lines = port_file.read_text().splitlines() if port_file.exists() else []
    return int(lines[0]) if len(lines) >= 2 and lines[0].isdigit() else None


def _tail(log: Path) -> str:
    """The end of Chromium's stderr, less its D-Bus complaints (it has no bus here, harmless)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError as error:
        return f"no chromium.log ({error})"
    return "chromium.log ends: " + " | ".join(
        [x for x in lines if "dbus" not in x.lower().replace("-", "")][-5:]
    )


async def _poll(
    check: Callable[[], Awaitable[T | None]], timeout: float, what: Callable[[], str]
) -> T:
    """``check()`` every 50 ms until it gives something; TimeoutError saying ``what()`` after
    ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (found := await check()) is None:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{what()} in {timeout} s")
        await asyncio.sleep(0.05)
    return found


async def _page_socket(
    proc: asyncio.subprocess.Process, port_file: Path, log: Path, timeout: float
) -> str:
    """The page target's WebSocket URL, once Chromium wrote its port and listed the page."""

    async def port() -> int | None:
        if proc.returncode is not None:
            raise AssertionError(f"chromium exited with {proc.returncode}; {_tail(log)}")
        return _port(port_file)

    number = await _poll(port, timeout, lambda: f"chromium wrote no {port_file}; {_tail(log)}")
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:

        async def page() -> str | None:
            try:
                targets = (await http.get(f"http://127.0.0.1:{number}/json/list")).json()
            except httpx.HTTPError:
                return None
            pages = [t for t in targets if t.get("type") == "page"]
            return str(pages[0]["webSocketDebuggerUrl"]) if pages else None

        return await _poll(page, timeout, lambda: f"chromium listed no page on port {number}")


async def _end(proc: asyncio.subprocess.Process, grace: float = 10) -> None:
    """SIGTERM and ``grace`` seconds to exit, then SIGKILL to its whole process group."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):  # it died, not reaped yet
            proc.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), grace)
    with contextlib.suppress(ProcessLookupError):  # and its helpers, which outlive it a while
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()
