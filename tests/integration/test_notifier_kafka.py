"""The notifier through the real broker and MongoDB-wire server, delivering to a real SMTP
server (aiosmtpd) and a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import email
import email.policy
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import httpx
import orjson
import pytest

from deploy.local.mailsink import MailSink
from services.notifier.channels.email import message_id
from services.notifier.channels.webhook import verify
from services.notifier.directory import MongoDirectory
from services.notifier.service import build
from services.notifier.settings import NotifierSettings
from services.notifier.templates import Templates
from shared.events.envelope import CanonicalEvent
from shared.events.types import resolve_type
from shared.metrics import DEAD_LETTERS, PRODUCED
from shared.mongo import database, make_client
from shared.runtime import Service
from shared.settings import KafkaSettings, MongoSettings, TopicSettings
from tests.integration.ingest_fixtures import wait_assigned
from tests.kafka_helpers import produce, publish_events, read_topic
from tests.receivers import HttpReceiver
from tests.waiting import eventually

pytestmark = pytest.mark.integration

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TEMPLATES = Templates()


class Clock:
    def __init__(self) -> None:
        self.now: datetime | None = None

    def __call__(self) -> datetime:
        return self.now or datetime.now(UTC)


@dataclass
class Harness:
    kafka: KafkaSettings
    topics: TopicSettings
    sink: MailSink
    receiver: HttpReceiver
    settings: NotifierSettings
    clock: Clock
    receiver_url: str
    service: Service | None = None

    async def contacts(self, *events: CanonicalEvent) -> None:
        """Publish profiles and wait until the notifier knows them (else an action sent next
        would be deferred as "unknown_recipient")."""
        await publish_events(self.kafka, self.topics.events, list(events))
        client = make_client(self.settings.mongo, "test")
        directory = MongoDirectory(database(client, self.settings.mongo)["contacts"])
        wanted = {e.subject for e in events}

        async def known() -> bool:
            return len(await directory.get(wanted)) == len(wanted)

        try:
            await eventually(known, what=f"the notifier does not know all of {sorted(wanted)}")
        finally:
            await client.close()

    async def actions(self, *actions: dict[str, Any]) -> None:
        for a in actions:
            await produce(self.kafka, self.topics.actions, [a], key=a["subject"].encode())

    async def outcomes(self, expect: int, settle: float = 1.5) -> list[dict[str, Any]]:
        records = await read_topic(self.kafka, self.topics.deliveries, expect=expect, settle=settle)
        return [orjson.loads(r.value) for r in records]

    async def final_outcomes(self, keys: set[str]) -> list[dict[str, Any]]:
        """Every outcome, once each of ``keys`` has one that is not a deferral (how many
        deferrals come first depends on timing); then ``settle`` for any repeated outcome."""
        found: list[dict[str, Any]] = []

        async def complete() -> bool:
            found[:] = await self.outcomes(expect=0, settle=0)
            return {o["key"] for o in found if o["outcome"] != "deferred"} >= keys

        await eventually(complete, what=lambda: f"{len(found)} outcomes: {found[-5:]}")
        return await self.outcomes(expect=len(found))

    def mails(self) -> list[EmailMessage]:
        return [
            email.message_from_bytes(raw, policy=email.policy.default) for raw in self.sink.messages
        ]


def customer(cid: str, name: str, mail: str, tz: str = "UTC", **extra: Any) -> CanonicalEvent:
    payload = resolve_type("customer.upserted").model_validate(  # type: ignore[union-attr]
        {"customer_id": cid, "name": name, "timezone": tz, "email": mail, **extra}
    )
    return CanonicalEvent.build(
        event_id=f"profile-{cid}-{uuid.uuid4().hex[:6]}",
        source="test",
        payload=payload,
        time=datetime(2026, 1, 1, tzinfo=UTC),
        source_offset="Z",
    )


def staff(sid: str, **extra: Any) -> CanonicalEvent:
    payload = resolve_type("staff.upserted").model_validate(  # type: ignore[union-attr]
        {"staff_id": sid, "name": "王芳", "timezone": "Asia/Shanghai", **extra}
    )
    return CanonicalEvent.build(
        event_id=f"staff-{sid}",
        source="test",
        payload=payload,
        time=datetime(2026, 1, 1, tzinfo=UTC),
        source_offset="Z",
    )


BIRTHDAY = {"customer_id": "C-1", "customer_name": "李雷", "age": 40, "year": 2026}


def action(
    key: str,
    recipient: str = "C-1",
    *,
    kind: str = "email",
    template: str = "birthday_greeting",
    priority: str = "marketing",
    data: dict[str, Any] | None = None,
    locale: str = "zh-CN",
    recipient_kind: str = "customer",
) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "key": key,
        "rule": key.split(":", 1)[0],
        "subject": f"{recipient_kind}:{recipient}",
        "kind": kind,
        "recipient": {"kind": recipient_kind, "id": recipient},
        "template": template,
        "locale": locale,
        "due_at": now,
        "priority": priority,
        "data": data if data is not None else dict(BIRTHDAY, customer_id=recipient),
        "created_at": now,
    }


@asynccontextmanager
async def notifier(
    kafka_settings: KafkaSettings,
    mongo_settings: MongoSettings,
    topics: TopicSettings,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    sink, receiver, clock = MailSink(), HttpReceiver(), Clock()
    smtp_port = await sink.start(port=0)
    url = await receiver.start()
    tag = uuid.uuid4().hex[:8]
    options: dict[str, Any] = {
        "batch_timeout_ms": 50,
        "smtp_port": smtp_port,
        "webhook_url": f"{url}/hooks/upkeep",
        "webhook_secrets": [SECRET],
        "allow_private_destinations": True,
        "dispatch_interval_s": 0.1,
        "retry_base_s": 0.2,
        "retry_max_s": 0.5,
        "unknown_recipient_retry_s": 0.5,
        "quiet_hours_start": None,
        "quiet_hours_end": None,
    }
    settings = NotifierSettings(
        kafka=kafka_settings,
        mongo=mongo_settings.model_copy(update={"database": f"notifier_{tag}"}),
        topics=topics,
        consumer_group=f"notifier-{tag}",
        instance_id=tag,
        **(options | overrides),
    )
    harness = Harness(kafka_settings, topics, sink, receiver, settings, clock, url)
    try:
        async with build(settings, clock) as service:
            harness.service = service
            (loop,) = service.loops
            task = asyncio.create_task(loop.run())
            try:
                await wait_assigned(loop)
                yield harness
            finally:
                loop.stop()
                await task
    finally:
        await sink.stop()
        await receiver.stop()


async def test_an_email_as_received_and_a_one_click_unsubscribe(
    kafka_settings: KafkaSettings, mongo_settings: MongoSettings, topics: TopicSettings
) -> None:
    async with notifier(kafka_settings, mongo_settings, topics) as h:
        await h.contacts(customer("C-1", "李雷", "li.lei@example.com"))
        await h.actions(action("birthday:C-1:2026"), action("birthday:C-1:2026"))  # twice
        await eventually(lambda: len(h.sink.messages) >= 1)
        (mail,) = h.mails()
        assert str(mail["To"]) == "李雷 <li.lei@example.com>"
        assert mail["Message-ID"] == message_id("birthday:C-1:2026", "upkeep.localhost")
        assert "=?utf-8?" in h.sink.messages[0].decode().split("\r\n\r\n", 1)[0]  # RFC 2047
        assert "生日" in str(mail["Subject"])
        assert mail.get_content_type() == "multipart/alternative"
        parts = [p.get_content_type() for p in mail.iter_parts()]
        assert parts == ["text/plain", "text/html"]
        text = mail.get_body(("plain",))
        html = mail.get_body(("html",))
        assert text is not None
        assert html is not None
        assert "李雷" in text.get_content()
        assert "<html" in html.get_content().lower()
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        unsubscribe = str(mail["List-Unsubscribe"]).strip("<>")
        assert unsubscribe.startswith("http://127.0.0.1:8003/v1/unsubscribe?")

        # the mail client's one-click POST (RFC 8058) against the running app
        assert h.service is not None
        transport = httpx.ASGITransport(app=h.service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://notifier") as client:
            path = unsubscribe.removeprefix("http://127.0.0.1:8003")
            answer = await client.post(path, content=b"List-Unsubscribe=One-Click")
            assert answer.status_code == 200
            forged = await client.post(path.replace("r=customer%3AC-1", "r=customer%3AC-2"))
            assert forged.status_code == 403
        await h.actions(action("birthday:C-1:2027"))
        outcomes = await h.outcomes(expect=2)
    assert [(o["key"], o["outcome"], o["reason"]) for o in outcomes] == [
        ("birthday:C-1:2026", "sent", None),
        ("birthday:C-1:2027", "suppressed", "unsubscribed"),
    ]
    assert len(h.sink.messages) == 1


async def test_transactional_mail_has_no_unsubscribe_and_webhooks_are_signed(
    kafka_settings: KafkaSettings, mongo_settings: MongoSettings, topics: TopicSettings
) -> None:
    async with notifier(kafka_settings, mongo_settings, topics) as h:
        await h.contacts(customer("C-1", "Ada Lovelace", "ada@example.com"))
        renewal = action(
            "renewal:K-1:2026-05-31:30d",
            kind="webhook",
            template="renewal_customer_notice",
            priority="transactional",
            locale="en",
            data=TEMPLATES.sample("renewal_customer_notice")
            | {"customer_id": "C-1", "customer_name": "Ada Lovelace", "contract_id": "K-1"},
        )
        await h.actions(renewal, dict(renewal, kind="email", key="renewal:K-1:mail"))
        outcomes = await h.outcomes(expect=2)
        assert {o["outcome"] for o in outcomes} == {"sent"}, outcomes
    (mail,) = h.mails()
    assert mail["List-Unsubscribe"] is None
    (hook,) = h.receiver.received
    assert hook.path == "/hooks/upkeep"
    assert hook.headers["webhook-id"] == "renewal:K-1:2026-05-31:30d"
    assert verify(SECRET, hook.headers, hook.body)
    assert not verify(SECRET, hook.headers, hook.body + b" ")
    body = orjson.loads(hook.body)
    assert body["action"]["key"] == "renewal:K-1:2026-05-31:30d"
    assert "K-1" in body["message"]["text"]


async def test_a_dingtalk_bot_gets_a_signed_markdown_message(
    kafka_settings: KafkaSettings, mongo_settings: MongoSettings, topics: TopicSettings
) -> None:
    async with notifier(kafka_settings, mongo_settings, topics) as h:
        bot = f"{h.receiver_url}/robot/send?access_token=t0k3n"
        await h.contacts(staff("S-1", chat_webhook_url=bot, chat_platform="dingtalk"))
        alert = action(
            "churn:C-9:alert",
            "S-1",
            kind="chat",
            template="churn_risk_alert",
            priority="transactional",
            recipient_kind="staff",
            data=TEMPLATES.sample("churn_risk_alert") | {"customer_name": "Acme"},
        )
        await h.actions(alert)
        outcomes = await h.outcomes(expect=1)
    assert outcomes[0]["outcome"] == "sent", outcomes
    (message,) = h.receiver.received
    assert message.query["access_token"] == ["t0k3n"]
    body = orjson.loads(message.body)
    assert body["msgtype"] == "markdown"
    assert "Acme" in body["markdown"]["text"]


async def test_quiet_hours_defer_and_the_cap_suppresses_marketing(
    kafka_settings: KafkaSettings, mongo_settings: MongoSettings, topics: TopicSettings
) -> None:
    from datetime import time

    async with notifier(
        kafka_settings,
        mongo_settings,
        topics,
        quiet_hours_start=time(21, 0),
        quiet_hours_end=time(8, 0),
        marketing_cap=3,
    ) as h:
        # 22:30 in Shanghai (later than the actions' due time): quiet until 08:00 there
        h.clock.now = datetime(2027, 6, 1, 14, 30, tzinfo=UTC)
        await h.contacts(customer("C-1", "李雷", "li.lei@example.com", tz="Asia/Shanghai"))
        await h.actions(*(action(f"promo:C-1:{n}") for n in range(5)))
        deferred = await h.outcomes(expect=5)
        assert {(o["outcome"], o["reason"]) for o in deferred} == {("deferred", "quiet_hours")}
        assert {o["next_at"] for o in deferred} == {"2027-06-02T00:00:00Z"}
        assert h.sink.messages == []
        h.clock.now = datetime(2027, 6, 2, 0, 0, 1, tzinfo=UTC)
        outcomes = await h.outcomes(expect=10)
    final = [(o["key"], o["outcome"], o["reason"]) for o in outcomes[5:]]
    assert sorted(o for _, o, _ in final) == ["sent"] * 3 + ["suppressed"] * 2
    assert {r for _, o, r in final if o == "suppressed"} == {"frequency_cap"}
    assert len(h.sink.messages) == 3


async def test_a_template_error_fails_the_action_and_dead_letters_it(
    kafka_settings: KafkaSettings, mongo_settings: MongoSettings, topics: TopicSettings
) -> None:
    async with notifier(kafka_settings, mongo_settings, topics) as h:
        await h.contacts(customer("C-1", "李雷", "li.lei@example.com"))
        await h.actions(action("birthday:C-1:2026", data={"customer_id": "C-1"}))
        outcomes = await h.outcomes(expect=1)
        dead = await read_topic(kafka_settings, topics.dlq, expect=1)
    assert outcomes[0]["outcome"] == "failed"
    assert outcomes[0]["reason"] == "template_error"
    assert h.sink.messages == []
    headers = dict(dead[0].headers)
    assert headers["upkeep-dlq-reason"] == b"delivery_failed"
    assert b"customer_name" in headers["upkeep-dlq-detail"]


async def test_a_provider_that_is_down_and_comes_back_gets_every_message_once(
    kafka_settings: KafkaSettings, mongo_settings: MongoSettings, topics: TopicSettings
) -> None:
    async with notifier(
        kafka_settings, mongo_settings, topics, breaker_failures=3, breaker_cooldown_s=3
    ) as h:
        await h.contacts(*(customer(f"C-{n}", f"客户{n}", f"c{n}@example.com") for n in range(20)))
        h.sink.mode = "tempfail"
        await h.actions(*(action(f"birthday:C-{n}:2026", f"C-{n}") for n in range(20)))
        await eventually(lambda: h.sink.refused >= 6)
        h.sink.mode = "accept"
        await eventually(lambda: len(h.sink.messages) >= 20, 120)
        # deferrals, then one final outcome each
        outcomes = await h.final_outcomes({f"birthday:C-{n}:2026" for n in range(20)})
    ids = [m["Message-ID"] for m in h.mails()]
    assert len(ids) == len(set(ids)) == 20
    final = [o for o in outcomes if o["outcome"] != "deferred"]
    assert sorted(o["key"] for o in final) == sorted(f"birthday:C-{n}:2026" for n in range(20))
    assert {o["outcome"] for o in final} == {"sent"}
    reasons = {o["reason"] for o in outcomes if o["outcome"] == "deferred"}
    assert {"smtp_451", "circuit_open"} <= reasons  # retried, and paused by the breaker


async def test_a_permanent_refusal_fails_dead_letters_and_suppresses_the_address(
    kafka_settings: KafkaSettings, mongo_settings: MongoSettings, topics: TopicSettings
) -> None:
    dead_lettered = DEAD_LETTERS.labels("delivery_failed")._value.get()
    produced = PRODUCED.labels(topics.deliveries)._value.get()
    async with notifier(kafka_settings, mongo_settings, topics) as h:
        await h.contacts(customer("C-1", "李雷", "li.lei@example.com"))
        h.sink.mode = "reject"
        await h.actions(action("birthday:C-1:2026"))
        outcomes = await h.outcomes(expect=1)
        h.sink.mode = "accept"
        await h.actions(action("birthday:C-1:2027", priority="transactional"))
        later = await h.outcomes(expect=2)
        dead = await read_topic(kafka_settings, topics.dlq, expect=1)
    assert (outcomes[0]["outcome"], outcomes[0]["reason"]) == ("failed", "smtp_550")
    assert (later[1]["outcome"], later[1]["reason"]) == ("suppressed", "suppressed_address")
    assert len(dead) == 1
    assert h.sink.messages == []
    # what ticks publish and dead-letter is counted like what batches do (ops alert on it)
    assert DEAD_LETTERS.labels("delivery_failed")._value.get() == dead_lettered + 1
    assert PRODUCED.labels(topics.deliveries)._value.get() >= produced + 2
