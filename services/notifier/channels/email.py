"""E-mail over SMTP (aiosmtplib): the message as recipients' clients expect it, and a pool of
reused connections bounded per server.

The message is multipart/alternative (text, then HTML) in UTF-8; names and subjects in any
script are RFC 2047 encoded words, folded into lines of at most 78 characters. An action with
attachments makes it multipart/mixed: that alternative part first, then each file, in base64
(lines of 76 characters) and, for text types, UTF-8. The
``Message-ID`` is derived from the action's key, so a message sent again after a crash carries
the same id and receiving systems can tell. Non-transactional messages carry RFC 8058 one-click
unsubscribe headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.errors import MessageError
from email.header import Header
from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr, parseaddr
from typing import Literal

import aiosmtplib

from services.notifier.channels.base import Delivery
from services.notifier.directory import Contact
from services.notifier.errors import (
    PermanentDeliveryError,
    RecipientRefused,
    TransientDeliveryError,
)
from services.notifier.templates import Rendered
from shared.events.actions import Attachment
from shared.logging import redact

log = logging.getLogger(__name__)

Security = Literal["none", "starttls", "tls"]


def message_id(key: str, domain: str) -> str:
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:40]}@{domain}>"


@dataclass(frozen=True, slots=True)
class Mail:
    """A message as it goes on the wire (CRLF line ends, 7-bit headers) and its envelope."""

    sender: str  # the envelope's MAIL FROM: the From address
    recipient: str  # the envelope's RCPT TO
    data: bytes

    def parsed(self) -> EmailMessage:
        """The message as a mail client reads it (tests, previews)."""
        parsed = message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


# the standard library's legacy MIME classes and Header build and flatten a message in about
# 0.7 ms, where EmailMessage's structured headers and content manager took 2.8 (most of the
# notifier's time per e-mail); the bytes are the same kind of message (RFC 2047 words, folded
# headers, UTF-8 bodies in base64), which tests/unit/notifier/test_email.py reads back
_WIRE = compat32.clone(linesep="\r\n", max_line_length=76)  # words of at most 75


def _address(header: str, name: str, address: str) -> str | Header:
    """``Name <address>``: an ASCII name quoted where it needs to be; any other name as
    RFC 2047 encoded words of at most 75 characters, folded with the rest of the header into
    lines of at most 78 (one long encoded word would break both limits)."""
    if not name or name.isascii():
        return formataddr((name, address))
    value = Header(name, "utf-8", header_name=header)
    value.append(f"<{address}>", "us-ascii")
    return value


@dataclass(frozen=True, slots=True)
class _Unfolded:
    """A header value written as it is: a URL in angle brackets, which folding would move to
    a line of its own (RFC 5322 allows 998 characters; 78 is only recommended)."""

    value: str

    def encode(self, linesep: str = "\n", maxlinelen: int | None = None) -> str:
        return self.value

    def __str__(self) -> str:
        return self.value


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
    attachments: Sequence[Attachment] = (),
) -> Mail:
    """Raises ``ValueError`` for what no mail server would take: a header value of several
    lines, an address that is not ASCII (that would need SMTPUTF8). Without ``attachments``
    the message is multipart/alternative; with them, multipart/mixed around it."""
    sender_name, sender_address = parseaddr(sender)
    for value in (sender_name, to_name or "", rendered.subject, key):
        if "\r" in value or "\n" in value:
            raise ValueError("a header value must be one line")
    for address in (sender_address, to_address):
        if not address.isascii() or "@" not in address:
            raise ValueError("an address must be ASCII (SMTPUTF8 is not used)")
    # the boundary from the key: never inside a base64 part, and the generator need not search
    # the bodies for one (it compiles a fresh regular expression per message to do so); the
    # mixed part's ("=_m…") and the alternative's ("=_" and hex) are never prefixes of each other
    digest = hashlib.sha256(key.encode()).hexdigest()
    alternative = MIMEMultipart("alternative", boundary=f"=_{digest}")
    message = alternative
    if attachments:
        message = MIMEMultipart("mixed", boundary=f"=_m{digest}")
        del alternative["MIME-Version"]
        message.attach(alternative)
    message["From"] = _address("From", sender_name, sender_address)  # type: ignore[assignment]
    message["To"] = _address("To", to_name or "", to_address)  # type: ignore[assignment]
    charset = "us-ascii" if rendered.subject.isascii() else "utf-8"
    message["Subject"] = Header(rendered.subject, charset, header_name="Subject")  # type: ignore[assignment]
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id(key, domain)
    message["Auto-Submitted"] = "auto-generated"
    message["X-Upkeep-Key"] = key
    if unsubscribe_url is not None:
        message["List-Unsubscribe"] = _Unfolded(f"<{unsubscribe_url}>")  # type: ignore[assignment]
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for body, subtype in ((rendered.text, "plain"), (rendered.html, "html")):
        part = MIMEText(body, subtype, "utf-8")
        del part["MIME-Version"]  # once, on the whole message
        alternative.attach(part)
    for attachment in attachments:
        message.attach(_attachment_part(attachment))
    return Mail(sender_address, to_address, message.as_bytes(policy=_WIRE))


def _attachment_part(attachment: Attachment) -> MIMEBase:
    """One file: its text in UTF-8, base64 encoded (so no line comes near 998 bytes and the
    boundary can never occur in it), named in ``Content-Disposition`` (RFC 2231 if the name is
    not ASCII, which the contract's pattern does not allow today)."""
    main, subtype = attachment.media_type.split("/", 1)
    part: MIMEBase
    if main == "text":
        part = MIMEText(attachment.content, subtype, "utf-8")  # charset="utf-8", base64
    else:  # application/json: UTF-8 by definition (RFC 8259), no charset parameter
        part = MIMEApplication(attachment.content.encode("utf-8"), subtype)
    del part["MIME-Version"]
    name = attachment.filename
    filename: str | tuple[str, str, str] = name if name.isascii() else ("utf-8", "", name)
    part.add_header("Content-Disposition", "attachment", filename=filename)
    return part


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

    async def send(self, mail: Mail) -> None:
        async with self._slots:
            client = self._idle.pop() if self._idle else None
            try:
                if client is None or not client.is_connected:
                    client = await self._connect()
                await client.sendmail(mail.sender, [mail.recipient], mail.data)
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


class EmailChannel:
    """Delivers ``email`` actions through the pool, as ``mail_from``."""

    kind, needs_contact = "email", True

    def __init__(self, pool: SmtpPool, mail_from: str, message_id_domain: str) -> None:
        self._pool, self._from, self._domain = pool, mail_from, message_id_domain

    @property
    def concurrency(self) -> int:
        return self._pool.size

    def provider(self, contact: Contact | None) -> str:
        return self._pool.server.name

    async def send(self, delivery: Delivery) -> None:
        contact = delivery.contact
        if contact is None or not contact.email:
            raise PermanentDeliveryError("no_address", "the recipient has no e-mail address")
        try:
            mail = build_message(
                key=delivery.key,
                sender=self._from,
                to_address=contact.email,
                to_name=contact.name,
                rendered=delivery.rendered,
                domain=self._domain,
                now=delivery.now,
                unsubscribe_url=delivery.unsubscribe_url,
                attachments=delivery.action.attachments,
            )
        except (ValueError, TypeError, MessageError) as exc:  # e.g. a name with a newline
            raise PermanentDeliveryError("invalid_message", str(exc)[:200]) from exc
        await self._pool.send(mail)


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
