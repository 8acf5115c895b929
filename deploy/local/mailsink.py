"""A development SMTP server (aiosmtpd) that keeps every message it receives as an ``.eml``
file: ``python -m deploy.local.mailsink --dir .run/mail --port 1025``.

``make up`` starts it and points the notifier at it; tests start :class:`MailSink` in their own
event loop, and can make it refuse for a while (``mode``) to play a provider that is down.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.smtp import SMTP, Envelope, Session

Mode = Literal["accept", "tempfail", "reject"]


class MailSink:
    """Accepts every message, or by ``mode`` refuses it for now (451 after DATA) or refuses the
    recipient for good (550 at RCPT); accepted ones are written to ``directory`` atomically and
    kept in ``messages``."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self.mode: Mode = "accept"
        self.messages: list[bytes] = []
        self.refused = 0
        self.port = 0  # the port listened on, once started
        self._server: asyncio.Server | None = None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.mode == "reject":  # the mailbox does not exist: a hard bounce
            self.refused += 1
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.mode == "tempfail":
            self.refused += 1
            return "451 4.3.0 try again later"
        content = envelope.original_content or b""
        if isinstance(content, str):
            content = content.encode()
        self.messages.append(content)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml"
            partial = self.directory / f".{name}.partial"
            partial.write_bytes(content)
            partial.rename(self.directory / name)
        return "250 2.0.0 message accepted"

    async def start(self, host: str = "127.0.0.1", port: int = 1025) -> int:
        """Listen in the running event loop; returns the port (pass 0 for a free one)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self, enable_SMTPUTF8=True, data_size_limit=10 * 1024 * 1024),
            host,
            port,
        )
        sockets: Any = self._server.sockets
        self.port = int(sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def _serve(directory: Path, host: str, port: int) -> None:
    sink = MailSink(directory)
    await sink.start(host, port)
    sys.stdout.write(f"mail sink on {host}:{port}, keeping messages in {directory}\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Development SMTP server that keeps .eml files")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.dir, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
