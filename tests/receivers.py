"""A real HTTP receiver on 127.0.0.1 for webhook and chat-bot tests: records every request and
answers with whatever status and body the test sets (to play a provider that is down)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpReceiver:
    status: int = 200
    reply: bytes = b'{"errcode": 0, "code": 0}'
    reply_headers: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    _server: Any = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                url = urlsplit(target)
                status = self.status
                if status < 300:
                    self.received.append(
                        Received(method, url.path, parse_qs(url.query), headers, body)
                    )
                self.answered.append(status)
                extra = "".join(f"{k}: {v}\r\n" for k, v in self.reply_headers.items())
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra}"
                    f"content-length: {len(self.reply)}\r\n\r\n".encode()
                    + self.reply
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
