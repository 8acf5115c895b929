"""The world the dispatcher tests run in (test_dispatch_*.py, test_digest.py).

services/notifier/dispatcher.py without Kafka or MongoDB: batches go through
:meth:`Dispatcher.handle`, ticks through :meth:`Dispatcher.tick`, with the in-memory ledger,
directory and policy store, the real templates, a clock the test moves, and fake channels that
record what they are given and fail when told to. The fakes yield to the event loop once per
call, as real network I/O does, so that concurrent sends interleave as they would in service.

``after_commit`` hooks are run the way the consumer loop runs them once a transaction commits;
a test that leaves them out plays a commit that failed."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import orjson

from services.notifier.breaker import Breakers
from services.notifier.channels.base import Channel
from services.notifier.channels.chat import ChatChannel
from services.notifier.channels.email import EmailChannel, Mail
from services.notifier.channels.task import TaskChannel
from services.notifier.channels.webhook import WebhookChannel
from services.notifier.digest import Digest
from services.notifier.directory import Contact, InMemoryDirectory
from services.notifier.dispatcher import Dispatcher
from services.notifier.entry import Entry
from services.notifier.errors import DeliveryError, TransientDeliveryError
from services.notifier.intake import Intake
from services.notifier.ledger import InMemoryLedger
from services.notifier.limits import Limits
from services.notifier.policy import Rules
from services.notifier.preferences import InMemoryPolicyStore
from services.notifier.tasks import Task
from services.notifier.templates import Templates
from services.notifier.unsubscribe import Unsubscribes
from shared.events.deliveries import DeliveryMessage
from shared.events.envelope import CanonicalEvent
from shared.events.types import resolve_type
from shared.kafka.messages import HandlerResult, Record, StoredRecord

ACTIONS, EVENTS, DELIVERIES = "actions", "events", "deliveries"
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # noon: outside quiet hours in UTC
WEBHOOK_URL = "https://hooks.example.com/upkeep"
BOT_URL = "https://oapi.dingtalk.com/robot/send?access_token=t0k3n"
TEMPLATES = Templates()
NO_QUIET_HOURS = Rules(quiet_start=None, quiet_end=None)
LIMITS = Limits(
    max_attempts=4,
    retry_base_s=10.0,
    retry_max_s=60.0,
    unknown_recipient_wait=timedelta(hours=1),
    unknown_recipient_retry=timedelta(seconds=30),
)
BIRTHDAY = {"customer_id": "C-1", "customer_name": "李雷", "year": 2026}
OFFSETS = itertools.count()


# fakes ----------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass(frozen=True)
class FakeServer:
    name: str = "smtp:mail.example.com:587"


class Failures:
    """What a fake provider answers: the queued errors first, one per call, then ``always``
    (while set), else success."""

    def __init__(self) -> None:
        self.queue: list[DeliveryError] = []
        self.always: Callable[[], DeliveryError] | None = None
        self.calls = 0

    async def next(self) -> None:
        self.calls += 1
        await asyncio.sleep(0)  # a network round trip: other sends run meanwhile
        if self.queue:
            raise self.queue.pop(0)
        if self.always is not None:
            raise self.always()


class FakeMail(Failures):
    """What the dispatcher uses of an :class:`SmtpPool`."""

    def __init__(self) -> None:
        super().__init__()
        self.server = FakeServer()
        self.size = 4  # connections, as SmtpPool.size
        self.delivered: list[tuple[EmailMessage, str]] = []

    async def send(self, mail: Mail) -> None:
        await self.next()
        self.delivered.append((mail.parsed(), mail.recipient))


class FakeWebhook(Failures):
    def __init__(self) -> None:
        super().__init__()
        self.posted: list[tuple[str, str, Mapping[str, Any]]] = []

    async def send(self, url: str, msg_id: str, payload: Mapping[str, Any]) -> int:
        await self.next()
        self.posted.append((url, msg_id, payload))
        return 200


class FakeChat(Failures):
    def __init__(self) -> None:
        super().__init__()
        self.posted: list[tuple[str, str | None, str, str]] = []

    async def send(self, url: str, platform: str | None, title: str, text: str) -> None:
        await self.next()
        self.posted.append((url, platform, title, text))


class FakeTasks:
    def __init__(self) -> None:
        self.created: list[Task] = []

    async def create(self, task: Task) -> bool:
        await asyncio.sleep(0)
        new = all(t.id != task.id for t in self.created)
        if new:
            self.created.append(task)
        return new


def transient(reason: str = "smtp_451", retry_after: float | None = None) -> DeliveryError:
    return TransientDeliveryError(reason, "try again later", retry_after=retry_after)


# the world under test -------------------------------------------------------------------------


@dataclass
class World:
    dispatcher: Dispatcher
    ledger: InMemoryLedger
    directory: InMemoryDirectory
    policy: InMemoryPolicyStore
    mail: FakeMail
    webhook: FakeWebhook
    chat: FakeChat
    tasks: FakeTasks
    clock: Clock
    unsubscribes: Unsubscribes
    intake: Intake

    async def consume(self, *records: Record) -> HandlerResult:
        """One batch, committed."""
        return await commit(await self.intake.handle(records))

    async def tick(self, *partitions: int, committed: bool = True) -> HandlerResult:
        result = await self.dispatcher.tick(set(partitions or (0,)))
        for message in result.messages:
            assert message.topic == DELIVERIES
        return await commit(result) if committed else result

    async def customer(self, cid: str = "C-1", **fields: Any) -> Contact:
        fields = {"name": "李雷", "email": f"{cid.lower()}@example.com", **fields}
        contact = Contact(id=f"customer:{cid}", updated_at=T0, **fields)
        await self.directory.upsert([contact])
        return contact

    async def staff(self, sid: str = "S-1", **fields: Any) -> Contact:
        fields = {"name": "王芳", "locale": "zh-CN", "timezone": "Asia/Shanghai", **fields}
        contact = Contact(id=f"staff:{sid}", updated_at=T0, **fields)
        await self.directory.upsert([contact])
        return contact

    def entry(self, key: str) -> Entry:
        return self.ledger.entries[key]


def make_world(
    *,
    rules: Rules = NO_QUIET_HOURS,
    limits: Limits = LIMITS,
    breakers: Breakers | None = None,
    mail: FakeMail | None = None,
    webhook_url: str | None = WEBHOOK_URL,
    digest: Digest | None = None,
) -> World:
    ledger, directory, policy = InMemoryLedger(), InMemoryDirectory(), InMemoryPolicyStore()
    fakes = mail or FakeMail(), FakeWebhook(), FakeChat(), FakeTasks()
    clock = Clock()
    unsubscribes = Unsubscribes("https://upkeep.example.com", b"unit-test-unsubscribe-key")
    # the fakes stand in for the providers: they have only what the channels use of them
    channels: list[Channel] = [
        EmailChannel(fakes[0], "Upkeep <upkeep@example.com>", "upkeep.example.com"),  # type: ignore[arg-type]
        WebhookChannel(fakes[1] if webhook_url else None, webhook_url),  # type: ignore[arg-type]
        ChatChannel(fakes[2]),  # type: ignore[arg-type]
        TaskChannel(fakes[3]),  # type: ignore[arg-type]
    ]
    dispatcher = Dispatcher(
        ledger,
        directory,
        policy,
        TEMPLATES,
        channels,
        unsubscribes,
        actions_topic=ACTIONS,
        deliveries_topic=DELIVERIES,
        rules=rules,
        limits=limits,
        breakers=breakers or Breakers(failures=5, cooldown=timedelta(minutes=5)),
        digest=digest,
        clock=clock,
    )
    intake = Intake(ledger, directory, actions_topic=ACTIONS, clock=clock)
    return World(dispatcher, ledger, directory, policy, *fakes, clock, unsubscribes, intake)


async def commit(result: HandlerResult) -> HandlerResult:
    """What the consumer loop does once the transaction has committed."""
    for hook in result.after_commit:
        outcome = hook()
        if inspect.isawaitable(outcome):
            await outcome
    return result


def outcomes(result: HandlerResult) -> list[DeliveryMessage]:
    found = [DeliveryMessage.model_validate_json(m.value) for m in result.messages]
    for message, outcome in zip(result.messages, found, strict=True):
        assert message.key == outcome.subject.encode()  # keyed by subject, like actions
    return found


def summary(result: HandlerResult) -> list[tuple[str, str, str | None]]:
    return sorted((o.key, o.outcome, o.reason) for o in outcomes(result))


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
    due_at: datetime = T0,
) -> dict[str, Any]:
    return {
        "key": key,
        "rule": key.split(":", 1)[0],
        "subject": f"{recipient_kind}:{recipient}",
        "kind": kind,
        "recipient": {"kind": recipient_kind, "id": recipient},
        "template": template,
        "locale": locale,
        "due_at": due_at.isoformat(),
        "priority": priority,
        "data": data if data is not None else dict(BIRTHDAY, customer_id=recipient),
        "created_at": (due_at - timedelta(minutes=1)).isoformat(),
    }


def record(body: dict[str, Any], *, partition: int = 0, offset: int | None = None) -> StoredRecord:
    return StoredRecord(
        ACTIONS,
        partition,
        next(OFFSETS) if offset is None else offset,
        orjson.dumps(body),
        body["subject"].encode(),
    )


def customer_event(cid: str, name: str, mail: str, **extra: Any) -> StoredRecord:
    payload = resolve_type("customer.upserted").model_validate(  # type: ignore[union-attr]
        {"customer_id": cid, "name": name, "timezone": "UTC", "email": mail, **extra}
    )
    event = CanonicalEvent.build(
        event_id=f"profile-{cid}-{uuid.uuid4().hex[:6]}",
        source="test",
        payload=payload,
        time=T0 - timedelta(days=1),
        source_offset="Z",
    )
    return StoredRecord(EVENTS, 0, next(OFFSETS), event.to_json(), event.subject.encode())


def outcome_id(key: str, suffix: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"upkeep:{key}:{suffix}"))


class PooledMail(FakeMail):
    """A fake that, like :class:`SmtpPool` of size 1, sends one message at a time."""

    def __init__(self) -> None:
        super().__init__()
        self.size = 1
        self._slot = asyncio.Semaphore(1)

    async def send(self, mail: Mail) -> None:
        async with self._slot:
            await super().send(mail)
