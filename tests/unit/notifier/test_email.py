"""services/notifier/channels/email.py: the message as a mail client parses it back, and the SMTP
pool against a real SMTP server (the development mail sink, aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from pydantic import ValidationError

from deploy.local.mailsink import MailSink
from services.notifier.channels.email import (
    Mail,
    SmtpPool,
    SmtpServer,
    build_message,
    message_id,
)
from services.notifier.errors import (
    PermanentDeliveryError,
    RecipientRefused,
    TransientDeliveryError,
)
from services.notifier.settings import NotifierSettings
from services.notifier.templates import Rendered
from tests.waiting import eventually

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DOMAIN = "upkeep.example.com"
SENDER = "Upkeep 客户关怀 <care@example.com>"
RENDERED = Rendered(
    subject="生日快乐，李雷！祝您在新的一年里万事如意、身体健康、工作顺利、阖家幸福、心想事成",
    text="李雷，您好：\n\n祝您生日快乐！\n",
    html="<html><body><p>李雷，您好：</p><p>祝您生日快乐！</p></body></html>\n",
)
UNSUBSCRIBE = "https://upkeep.example.com/v1/unsubscribe?r=customer%3AC-1&c=marketing&t=abc"


def build(
    key: str = "birthday:C-1:2026",
    *,
    to_name: str | None = "李雷",
    to_address: str = "li.lei@example.com",
    unsubscribe_url: str | None = None,
    rendered: Rendered = RENDERED,
) -> Mail:
    return build_message(
        key=key,
        sender=SENDER,
        to_address=to_address,
        to_name=to_name,
        rendered=rendered,
        domain=DOMAIN,
        now=NOW,
        unsubscribe_url=unsubscribe_url,
    )


def parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def header_block(raw: bytes) -> bytes:
    head, separator, _ = raw.partition(b"\r\n\r\n")
    assert separator, "the message has no header/body separator"
    return head


# the message ----------------------------------------------------------------------------------


def test_names_and_subject_in_chinese_round_trip() -> None:
    parsed = parse(build().data)
    assert str(parsed["From"]) == SENDER
    (sender,) = parsed["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Upkeep 客户关怀", "care@example.com")
    (to,) = parsed["To"].addresses
    assert (to.display_name, to.addr_spec) == ("李雷", "li.lei@example.com")
    assert str(parsed["Subject"]) == RENDERED.subject
    assert parsed["Date"] == format_datetime(NOW)
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["X-Upkeep-Key"] == "birthday:C-1:2026"


def test_headers_are_ascii_with_rfc_2047_encoded_words() -> None:
    head = header_block(build().data)
    text = head.decode("ascii")  # raises on any raw UTF-8 byte
    for name in ("From:", "To:", "Subject:"):
        line = next(line for line in text.split("\r\n") if line.startswith(name))
        assert "=?utf-8?" in line.lower(), line
    assert all(len(line) <= 78 for line in text.split("\r\n"))  # long headers are folded


def test_a_name_with_punctuation_is_quoted_and_round_trips() -> None:
    parsed = parse(build(to_name='Doe, John "JD"').data)
    (to,) = parsed["To"].addresses
    assert (to.display_name, to.addr_spec) == ('Doe, John "JD"', "li.lei@example.com")


def test_a_missing_name_leaves_the_bare_address() -> None:
    parsed = parse(build(to_name=None).data)
    (to,) = parsed["To"].addresses
    assert (to.display_name, to.addr_spec) == ("", "li.lei@example.com")


def test_the_body_is_text_then_html_both_utf8() -> None:
    parsed = parse(build().data)
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    for part, expected in zip(parts, (RENDERED.text, RENDERED.html), strict=True):
        assert isinstance(part, EmailMessage)
        assert part.get_content_charset() == "utf-8"
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        assert payload.decode("utf-8").replace("\r\n", "\n") == expected
        assert part.get_content().replace("\r\n", "\n") == expected
    text = parsed.get_body(("plain",))
    assert text is not None
    assert "祝您生日快乐" in text.get_content()


def test_the_message_id_is_derived_from_the_key() -> None:
    first = parse(build("birthday:C-1:2026").data)
    again = parse(build("birthday:C-1:2026").data)
    other = parse(build("birthday:C-1:2027").data)
    assert first["Message-ID"] == message_id("birthday:C-1:2026", DOMAIN)
    assert first["Message-ID"] == again["Message-ID"]
    assert other["Message-ID"] == message_id("birthday:C-1:2027", DOMAIN)
    assert other["Message-ID"] != first["Message-ID"]
    assert first["Message-ID"].startswith("<")
    assert first["Message-ID"].endswith(f"@{DOMAIN}>")
    assert message_id("birthday:C-1:2026", "other.example.com") != first["Message-ID"]


def test_one_click_unsubscribe_headers_only_with_a_link() -> None:
    marketing = parse(build(unsubscribe_url=UNSUBSCRIBE).data)
    assert marketing["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert marketing["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    transactional = parse(build().data)
    assert transactional["List-Unsubscribe"] is None
    assert transactional["List-Unsubscribe-Post"] is None


# the pool, against a real SMTP server ---------------------------------------------------------


class CountingSink(MailSink):
    """The mail sink, noting which client connection (its address and port) delivered each
    message, and keeping the server side of every connection so a test can hang up."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: list[Any] = []
        self.sessions: list[SMTP] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.peers.append(session.peer)
        return await super().handle_DATA(server, session, envelope)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        if server not in self.sessions:
            self.sessions.append(server)
        session.host_name = hostname
        return responses


@pytest.fixture
async def sink() -> AsyncIterator[tuple[CountingSink, SmtpServer]]:
    server = CountingSink()
    port = await server.start(port=0)
    try:
        yield server, SmtpServer(host="127.0.0.1", port=port, timeout_s=5.0)
    finally:
        await server.stop()


def message(key: str = "birthday:C-1:2026", to_address: str = "li.lei@example.com") -> Mail:
    return build(key, unsubscribe_url=UNSUBSCRIBE, to_address=to_address)


async def test_a_message_is_delivered_as_built(sink: tuple[CountingSink, SmtpServer]) -> None:
    server, address = sink
    pool = SmtpPool(address, size=1)
    try:
        await pool.send(message())
    finally:
        await pool.close()
    (raw,) = server.messages
    received = parse(raw)
    assert received["Message-ID"] == message_id("birthday:C-1:2026", DOMAIN)
    assert str(received["Subject"]) == RENDERED.subject
    (to,) = received["To"].addresses
    assert to.display_name == "李雷"
    text = received.get_body(("plain",))
    assert text is not None
    assert text.get_content().replace("\r\n", "\n") == RENDERED.text


async def test_a_temporary_refusal_is_transient(sink: tuple[CountingSink, SmtpServer]) -> None:
    server, address = sink
    pool = SmtpPool(address, size=1)
    try:
        server.mode = "tempfail"
        with pytest.raises(TransientDeliveryError) as caught:
            await pool.send(message())
        assert caught.value.reason == "smtp_451"
        assert caught.value.transient
        assert not isinstance(caught.value, PermanentDeliveryError)
        server.mode = "accept"  # and the next message goes through
        await pool.send(message())
    finally:
        await pool.close()
    assert server.refused == 1
    assert len(server.messages) == 1


async def test_a_permanent_refusal_is_a_refused_recipient(
    sink: tuple[CountingSink, SmtpServer],
) -> None:
    server, address = sink
    pool = SmtpPool(address, size=1)
    server.mode = "reject"
    try:
        with pytest.raises(RecipientRefused) as caught:
            await pool.send(message())
    finally:
        await pool.close()
    assert caught.value.reason == "smtp_550"
    assert not caught.value.transient
    assert "mailbox unavailable" in caught.value.detail
    assert server.messages == []


async def test_one_connection_serves_many_messages(sink: tuple[CountingSink, SmtpServer]) -> None:
    server, address = sink
    pool = SmtpPool(address, size=1)
    try:
        for n in range(5):
            await pool.send(message(f"birthday:C-{n}:2026", f"c{n}@example.com"))
    finally:
        await pool.close()
    assert len(server.messages) == 5
    assert len(server.peers) == 5
    assert len(set(server.peers)) == 1  # every message came over the same connection
    assert len(server.sessions) == 1


async def test_concurrent_sends_share_at_most_size_connections(
    sink: tuple[CountingSink, SmtpServer],
) -> None:
    server, address = sink
    pool = SmtpPool(address, size=2)
    try:
        await asyncio.gather(
            *(pool.send(message(f"birthday:C-{n}:2026", f"c{n}@example.com")) for n in range(8))
        )
    finally:
        await pool.close()
    assert len(server.messages) == 8
    assert 1 <= len(set(server.peers)) <= 2
    ids = {parse(raw)["Message-ID"] for raw in server.messages}
    assert ids == {message_id(f"birthday:C-{n}:2026", DOMAIN) for n in range(8)}


async def test_a_connection_the_server_closed_is_replaced(
    sink: tuple[CountingSink, SmtpServer],
) -> None:
    server, address = sink
    pool = SmtpPool(address, size=1)
    try:
        await pool.send(message("birthday:C-1:2026", "c1@example.com"))
        for session in server.sessions:  # the server hangs up on the idle connection
            assert session.transport is not None
            session.transport.close()
        # the pooled client learns of the hang-up asynchronously (when its transport sees EOF)
        await eventually(
            lambda: not any(client.is_connected for client in pool._idle),
            what="the pooled connection still looks open",
        )
        await pool.send(message("birthday:C-2:2026", "c2@example.com"))
    finally:
        await pool.close()
    assert len(server.messages) == 2
    assert len(set(server.peers)) == 2


async def test_a_server_that_is_not_listening_is_transient() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, and now is again
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pool = SmtpPool(SmtpServer(host="127.0.0.1", port=port, timeout_s=5.0), size=1)
    try:
        with pytest.raises(TransientDeliveryError) as caught:
            await pool.send(message())
    finally:
        await pool.close()
    assert caught.value.reason == "smtp_unavailable"
    assert caught.value.transient


@pytest.mark.parametrize(
    ("to_name", "to_address"),
    [
        ("Li\r\nBcc: x@example.com", "li.lei@example.com"),
        ("李雷", "李雷@example.com"),
        ("Li", "no-at"),
    ],
)
def test_what_no_server_would_take_is_refused_before_sending(to_name: str, to_address: str) -> None:
    """A header injection, an address that would need SMTPUTF8, no address at all: the
    dispatcher turns the ValueError into a permanent ``invalid_message`` failure."""
    with pytest.raises(ValueError, match=r"one line|ASCII"):
        build(to_name=to_name, to_address=to_address)


def test_a_long_name_in_any_script_stays_within_the_line_and_word_limits() -> None:
    """RFC 5322 lines of at most 78 characters (998 at most), RFC 2047 words of at most 75."""
    name = "上海某某科技有限公司华东区销售部" * 12 + "😀" * 20
    raw = build(to_name=name).data
    lines = header_block(raw).decode("ascii").split("\r\n")
    assert all(len(line) <= 78 for line in lines), max(lines, key=len)
    words = [w for line in lines for w in line.split() if w.startswith("=?")]
    assert words
    assert all(len(w) <= 75 for w in words)
    (to,) = parse(raw)["To"].addresses
    # RFC 2047: the space between adjacent encoded words is not part of the text; Python's
    # parser keeps it (the former EmailMessage path round-tripped the same way)
    assert (to.display_name.replace(" ", ""), to.addr_spec) == (name, "li.lei@example.com")


@pytest.mark.parametrize(
    "sender", ["no address", "Upkeep <upkeep@例子.测试>", "A\nB <a@example.com>"]
)
def test_a_sender_no_message_can_carry_is_refused_at_start(sender: str) -> None:
    with pytest.raises(ValidationError, match="MAIL_FROM"):
        NotifierSettings(mail_from=sender)
