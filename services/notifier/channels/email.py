"""E-mail over SMTP (aiosmtplib): the message as recipients' clients expect it, and a pool of
reused connections bounded per server.

The message is multipart/alternative (text, then HTML) in UTF-8; names and subjects in any
script are encoded by the standard library's SMTP policy (RFC 2047 encoded words). The
``Message-ID`` is derived from the action's key, so a message sent again after a crash carries
the same id and receiving systems can tell. Non-transactional messages carry RFC 8058 one-click
unsubscribe headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, parseaddr
from typing import Literal

import aiosmtplib

from services.notifier.errors import PermanentDeliveryError, TransientDeliveryError
from services.notifier.templates import Rendered
from shared.logging import redact

log = logging.getLogger(__name__)

Security = Literal["none", "starttls", "tls"]


class RecipientRefused(PermanentDeliveryError):
    """The server refused the address for good (5xx): a hard bounce, added to suppressions."""


def message_id(key: str, domain: str) -> str:
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:40]}@{domain}>"


def build_message(
    *,
    key: str,
    sender: str,
    to_address: str,
    to_name: str | None,
    rendered: Rendered,
    domain: str,
    now: datetime,
    unsubscribe_url: str | None = None,
) -> EmailMessage:
    message = EmailMessage(policy=SMTP_POLICY)
    sender_name, sender_address = parseaddr(sender)
    message["From"] = Address(display_name=sender_name, addr_spec=sender_address)
    message["To"] = Address(display_name=to_name or "", addr_spec=to_address)
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id(key, domain)
    message["Auto-Submitted"] = "auto-generated"
    message["X-Upkeep-Key"] = key
    if unsubscribe_url is not None:
        message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(rendered.text, charset="utf-8")
    message.add_alternative(rendered.html, subtype="html", charset="utf-8")
    return message


@dataclass(frozen=True, slots=True)
class SmtpServer:
    host: str
    port: int
    security: Security = "none"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 20.0

    @property
    def name(self) -> str:
        return f"smtp:{self.host}:{self.port}"


class SmtpPool:
    """At most ``size`` connections to one server, reused between messages; a connection
    that failed is dropped and a fresh one is opened for the next message."""

    def __init__(self, server: SmtpServer, size: int = 4) -> None:
        self.server, self.size = server, size
        self._slots = asyncio.Semaphore(size)
        self._idle: list[aiosmtplib.SMTP] = []

    async def send(self, message: EmailMessage, to_address: str) -> None:
        async with self._slots:
            client = self._idle.pop() if self._idle else None
            try:
                if client is None or not client.is_connected:
                    client = await self._connect()
                await client.send_message(message, recipients=[to_address])
            except aiosmtplib.SMTPRecipientsRefused as exc:  # the address itself
                self._keep(client)
                refused = exc.recipients[0] if exc.recipients else None
                code = refused.code if refused is not None else 550
                raise _refused(code, refused.message if refused else str(exc)) from exc
            except (aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPAuthenticationError) as exc:
                # our configuration, not the message: pause the provider, fail nobody
                await self._drop(client)
                raise TransientDeliveryError(f"smtp_{exc.code}", redact(exc.message)) from exc
            except aiosmtplib.SMTPResponseException as exc:
                await self._drop(client)
                raise _by_code(exc.code, exc.message) from exc
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                await self._drop(client)
                raise TransientDeliveryError("smtp_unavailable", type(exc).__name__) from exc
            self._keep(client)

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.server
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",
            timeout=s.timeout_s,
            username=s.username,
            password=s.password,
        )
        await client.connect()
        return client

    def _keep(self, client: aiosmtplib.SMTP | None) -> None:
        if client is not None and client.is_connected:
            self._idle.append(client)

    async def _drop(self, client: aiosmtplib.SMTP | None) -> None:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            with contextlib.suppress(Exception):
                await client.quit()


def _by_code(code: int, text: str) -> PermanentDeliveryError | TransientDeliveryError:
    """SMTP 4xx is temporary, 5xx permanent. Server texts often repeat the address: redacted."""
    detail = redact(text)[:200]
    if 400 <= code < 500:
        return TransientDeliveryError(f"smtp_{code}", detail)
    return PermanentDeliveryError(f"smtp_{code}", detail)


def _refused(code: int, text: str) -> PermanentDeliveryError | TransientDeliveryError:
    """The server refused the recipient: 550/551/553 is a hard bounce (suppressed)."""
    if code in (550, 551, 553):
        return RecipientRefused(f"smtp_{code}", redact(text)[:200])
    return _by_code(code, text)
