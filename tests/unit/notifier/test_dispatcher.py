"""services/notifier/dispatcher.py without Kafka or MongoDB: batches go through
:meth:`Dispatcher.handle`, ticks through :meth:`Dispatcher.tick`, with the in-memory ledger,
directory and policy store, the real templates, a clock the test moves, and fake channels that
record what they are given and fail when told to. The fakes yield to the event loop once per
call, as real network I/O does, so that concurrent sends interleave as they would in service.

``after_commit`` hooks are run the way the consumer loop runs them once a transaction commits;
a test that leaves them out plays a commit that failed."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from services.notifier.breaker import Breakers
from services.notifier.channels.chat import ChatChannel
from services.notifier.channels.email import EmailChannel, Mail, message_id
from services.notifier.channels.task import TaskChannel
from services.notifier.channels.webhook import WebhookChannel
from services.notifier.digest import Digest
from services.notifier.directory import Contact, InMemoryDirectory
from services.notifier.dispatcher import Dispatcher
from services.notifier.entry import Entry
from services.notifier.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RecipientRefused,
    TransientDeliveryError,
)
from services.notifier.intake import Intake
from services.notifier.ledger import InMemoryLedger
from services.notifier.limits import Limits
from services.notifier.policy import InMemoryPolicyStore, Preferences, Rules
from services.notifier.tasks import Task
from services.notifier.templates import Templates
from services.notifier.unsubscribe import Unsubscribes
from shared.events.actions import ActionMessage
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
    channels = [
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


# consuming ------------------------------------------------------------------------------------


async def test_contacts_come_from_profile_events_and_the_action_is_mailed_to_them() -> None:
    w = make_world()
    profile = customer_event("C-1", "李雷", "li.lei@example.com")
    birthday = record({**action("birthday:C-1:2026"), "context": {"owner": "S-7"}})
    not_a_profile = StoredRecord(EVENTS, 0, next(OFFSETS), b'{"not": "a canonical event"}')
    result = await w.consume(profile, not_a_profile, birthday)
    assert result.dead_letters == []  # the events topic is rules' to dead-letter, not ours
    assert result.messages == []  # consuming publishes nothing: outcomes come from ticks
    assert (await w.directory.get(["customer:C-1"]))["customer:C-1"].name == "李雷"
    assert w.mail.calls == 0

    sent = await w.tick()
    assert summary(sent) == [("birthday:C-1:2026", "sent", None)]
    assert outcomes(sent)[0].context == {"owner": "S-7"}  # passed on for analytics
    ((message, address),) = w.mail.delivered
    assert address == "li.lei@example.com"
    assert message["Message-ID"] == message_id("birthday:C-1:2026", "upkeep.example.com")
    assert "生日" in str(message["Subject"])  # the zh-CN template the action asked for


async def test_the_same_action_consumed_twice_is_recorded_once_and_sent_once() -> None:
    w = make_world()
    await w.customer()
    birthday = action("birthday:C-1:2026")
    await w.consume(record(birthday), record(birthday))  # twice in one batch
    assert list(w.ledger.entries) == ["birthday:C-1:2026"]
    await w.consume(record(birthday))  # and redelivered in a later batch before it was sent
    first = await w.tick()
    assert summary(first) == [("birthday:C-1:2026", "sent", None)]
    await w.consume(record(birthday))  # and again after it was sent
    w.clock.advance(days=1)
    assert (await w.tick()).messages == []
    assert w.mail.calls == 1
    assert w.entry("birthday:C-1:2026").state == "sent"


async def test_a_replayed_batch_is_recorded_once_and_sent_once() -> None:
    w = make_world()
    for n in range(3):
        await w.customer(f"C-{n}")
    batch = [record(action(f"birthday:C-{n}:2026", f"C-{n}"), offset=10 + n) for n in range(3)]
    await w.consume(*batch)
    assert len(outcomes(await w.tick())) == 3
    stored = {key: e.model_copy() for key, e in w.ledger.entries.items()}

    await w.consume(*batch)  # the whole batch again: a replay from an earlier offset
    w.clock.advance(minutes=5)
    assert (await w.tick()).messages == []
    assert w.mail.calls == 3
    assert sorted(a for _, a in w.mail.delivered) == [f"c-{n}@example.com" for n in range(3)]
    assert w.ledger.entries == stored  # the replay changed nothing


async def test_an_invalid_action_is_dead_lettered_and_the_rest_of_the_batch_recorded() -> None:
    w = make_world()
    not_json = StoredRecord(ACTIONS, 0, 1, b"{not json")
    no_key = record({k: v for k, v in action("birthday:C-1:2026").items() if k != "key"})
    unknown_kind = record(action("birthday:C-1:2027", kind="fax"))
    empty = StoredRecord(ACTIONS, 0, 4, None)
    good = record(action("birthday:C-1:2028"))
    result = await w.consume(not_json, no_key, unknown_kind, empty, good)
    assert [(d.record, d.reason) for d in result.dead_letters] == [
        (not_json, "invalid_action"),
        (no_key, "invalid_action"),
        (unknown_kind, "invalid_action"),
        (empty, "invalid_action"),
    ]
    assert "key" in result.dead_letters[1].detail
    assert list(w.ledger.entries) == ["birthday:C-1:2028"]


async def test_an_action_without_a_time_zone_on_its_due_time_is_dead_lettered() -> None:
    w = make_world()
    naive = record(action("birthday:C-1:2026") | {"due_at": "2026-06-01T12:00:00"})
    good = record(action("birthday:C-1:2027"))
    result = await w.consume(naive, good)
    assert [(d.record, d.reason) for d in result.dead_letters] == [(naive, "invalid_action")]
    assert list(w.ledger.entries) == ["birthday:C-1:2027"]


# outcomes and their publication ---------------------------------------------------------------


async def test_each_final_outcome_is_published_and_failures_are_dead_lettered() -> None:
    w = make_world()
    await w.customer("C-1")
    await w.customer("C-2", marketing_opt_in=False)
    sent = action("birthday:C-1:2026", "C-1")
    suppressed = action("birthday:C-2:2026", "C-2")
    failed = action("birthday:C-3:2026", "C-1", data={"customer_id": "C-1"})  # no name
    failed_record = record(failed, partition=0, offset=77)
    await w.consume(record(sent), record(suppressed), failed_record)

    result = await w.tick(committed=False)
    by_key = {o.key: o for o in outcomes(result)}
    assert {k: (o.outcome, o.reason) for k, o in by_key.items()} == {
        "birthday:C-1:2026": ("sent", None),
        "birthday:C-2:2026": ("suppressed", "unsubscribed"),
        "birthday:C-3:2026": ("failed", "template_error"),
    }
    for key, o in by_key.items():
        assert o.id == outcome_id(key, o.outcome)
        assert o.at == T0
        assert o.next_at is None
        assert o.due_at == T0
        assert (o.kind, o.priority, o.template, o.rule) == (
            "email",
            "marketing",
            "birthday_greeting",
            "birthday",
        )
    assert by_key["birthday:C-1:2026"].attempts == 1
    assert by_key["birthday:C-2:2026"].attempts == 0
    assert by_key["birthday:C-2:2026"].recipient.id == "C-2"
    assert by_key["birthday:C-2:2026"].data == dict(BIRTHDAY, customer_id="C-2")

    (dead,) = result.dead_letters
    assert dead.reason == "delivery_failed"
    assert "template_error" in dead.detail
    assert "customer_name" in dead.detail
    assert (dead.record.topic, dead.record.partition, dead.record.offset) == (ACTIONS, 0, 77)
    assert dead.record.value is not None
    kept = ActionMessage.model_validate_json(dead.record.value)
    assert kept == ActionMessage.model_validate(failed)
    assert all(w.entry(k).unpublished for k in by_key)

    await commit(result)
    assert not any(w.entry(k).unpublished for k in by_key)
    w.clock.advance(minutes=1)
    assert (await w.tick()).messages == []
    assert len(w.mail.delivered) == 1


async def test_outcomes_of_a_tick_whose_commit_failed_are_published_again_not_resent() -> None:
    w = make_world()
    await w.customer()
    await w.consume(
        record(action("birthday:C-1:2026")),
        record(action("birthday:C-1:2027", data={"customer_id": "C-1"})),  # template error
    )
    first = await w.tick(committed=False)  # the transaction did not commit: hooks never run
    assert summary(first) == [
        ("birthday:C-1:2026", "sent", None),
        ("birthday:C-1:2027", "failed", "template_error"),
    ]

    w.clock.advance(seconds=1)
    again = await w.tick(committed=False)
    assert [(o.id, o.at, o.attempts) for o in outcomes(again)] == [
        (o.id, o.at, o.attempts) for o in outcomes(first)
    ]
    assert [(d.reason, d.detail) for d in again.dead_letters] == [
        (d.reason, d.detail) for d in first.dead_letters
    ]
    assert w.mail.calls == 1

    w.clock.advance(seconds=1)
    third = await w.tick()  # this one commits
    assert [o.id for o in outcomes(third)] == [o.id for o in outcomes(first)]
    assert not w.entry("birthday:C-1:2026").unpublished
    w.clock.advance(seconds=1)
    assert (await w.tick()).messages == []
    assert w.mail.calls == 1


# retries --------------------------------------------------------------------------------------


async def test_a_transient_failure_is_deferred_with_its_reason_and_retried_later() -> None:
    w = make_world()
    await w.customer()
    await w.consume(record(action("birthday:C-1:2026")))
    w.mail.queue = [transient("smtp_451")]

    (deferred,) = outcomes(await w.tick())
    assert (deferred.outcome, deferred.reason, deferred.attempts) == ("deferred", "smtp_451", 1)
    assert deferred.next_at is not None
    assert T0 <= deferred.next_at <= T0 + timedelta(seconds=LIMITS.retry_base_s)
    assert deferred.id == outcome_id(
        "birthday:C-1:2026", f"deferred:{deferred.next_at.isoformat()}"
    )
    entry = w.entry("birthday:C-1:2026")
    assert (entry.state, entry.next_at, entry.unpublished) == ("pending", deferred.next_at, False)

    if deferred.next_at > T0:  # not yet due: nothing is tried before next_at
        w.clock.now = deferred.next_at - timedelta(microseconds=1)
        assert (await w.tick()).messages == []
        assert w.mail.calls == 1
    w.clock.now = deferred.next_at
    (sent,) = outcomes(await w.tick())
    assert (sent.outcome, sent.reason, sent.attempts) == ("sent", None, 2)
    assert w.mail.calls == 2
    assert len(w.mail.delivered) == 1


async def test_backoff_is_bounded_and_retries_end_in_a_dead_letter() -> None:
    limits = Limits(max_attempts=6, retry_base_s=10.0, retry_max_s=60.0)
    w = make_world(limits=limits, breakers=Breakers(failures=100))
    await w.customer()
    await w.consume(record(action("birthday:C-1:2026")))
    w.mail.always = lambda: transient("smtp_421")

    for attempt in range(1, limits.max_attempts):
        (o,) = outcomes(await w.tick())
        assert (o.outcome, o.reason, o.attempts) == ("deferred", "smtp_421", attempt)
        assert o.next_at is not None
        delay = (o.next_at - w.clock.now).total_seconds()
        assert 0 <= delay <= min(limits.retry_max_s, limits.retry_base_s * 2 ** (attempt - 1))
        w.clock.now = o.next_at

    last = await w.tick()
    (final,) = outcomes(last)
    assert (final.outcome, final.reason, final.attempts) == ("failed", "retries_exhausted", 6)
    (dead,) = last.dead_letters
    assert dead.reason == "delivery_failed"
    assert dead.detail.startswith("retries_exhausted")
    assert w.mail.calls == limits.max_attempts
    w.clock.advance(hours=2)
    assert (await w.tick()).messages == []
    assert w.mail.calls == limits.max_attempts


async def test_an_absurd_retry_after_is_capped_at_a_day() -> None:
    w = make_world()
    await w.consume(record(action("renewal:K-1:webhook", kind="webhook", priority="transactional")))
    w.webhook.queue = [transient("http_429", retry_after=1e15)]  # would overflow a datetime
    (deferred,) = outcomes(await w.tick())
    assert deferred.next_at == T0 + timedelta(days=1)


async def test_a_retry_after_from_the_provider_is_honoured() -> None:
    w = make_world()
    await w.consume(record(action("renewal:K-1:webhook", kind="webhook", priority="transactional")))
    w.webhook.queue = [transient("http_429", retry_after=600)]

    (deferred,) = outcomes(await w.tick())
    assert (deferred.outcome, deferred.reason) == ("deferred", "http_429")
    assert deferred.next_at is not None
    assert deferred.next_at >= T0 + timedelta(seconds=600)  # beyond the backoff's 10 s
    w.clock.now = T0 + timedelta(seconds=599)
    assert (await w.tick()).messages == []
    assert w.webhook.calls == 1
    w.clock.now = deferred.next_at
    assert summary(await w.tick()) == [("renewal:K-1:webhook", "sent", None)]
    (posted,) = w.webhook.posted
    assert posted[:2] == (WEBHOOK_URL, "renewal:K-1:webhook")


async def test_a_permanent_failure_fails_at_once_and_is_dead_lettered() -> None:
    w = make_world()
    await w.customer()
    await w.consume(record(action("birthday:C-1:2026")))
    w.mail.queue = [PermanentDeliveryError("smtp_554", "rejected for policy reasons")]

    result = await w.tick()
    (failed,) = outcomes(result)
    assert (failed.outcome, failed.reason, failed.attempts) == ("failed", "smtp_554", 1)
    (dead,) = result.dead_letters
    assert "smtp_554" in dead.detail
    assert "policy reasons" in dead.detail
    assert w.policy.suppressions == {}  # only a refused recipient is suppressed
    w.clock.advance(hours=1)
    assert (await w.tick()).messages == []
    assert w.mail.calls == 1


async def test_a_refused_address_is_suppressed_for_later_actions() -> None:
    w = make_world()
    await w.customer(email="Li.Lei@Example.com")
    await w.consume(record(action("birthday:C-1:2026")))
    w.mail.queue = [RecipientRefused("smtp_550", "mailbox unavailable")]

    result = await w.tick()
    assert summary(result) == [("birthday:C-1:2026", "failed", "smtp_550")]
    assert len(result.dead_letters) == 1
    assert w.policy.suppressions == {"li.lei@example.com": "smtp_550"}

    renewal = action(
        "renewal:K-1:mail",
        template="renewal_customer_notice",
        priority="transactional",
        data=TEMPLATES.sample("renewal_customer_notice"),
    )
    await w.consume(record(renewal))
    w.clock.advance(minutes=1)
    later = await w.tick()
    assert summary(later) == [("renewal:K-1:mail", "suppressed", "suppressed_address")]
    assert later.dead_letters == []
    assert w.mail.calls == 1


# the circuit breaker --------------------------------------------------------------------------


async def test_an_open_circuit_defers_without_sending_and_closes_after_the_cooldown() -> None:
    cooldown = timedelta(minutes=5)
    w = make_world(breakers=Breakers(failures=3, cooldown=cooldown))
    for n in range(5):
        await w.customer(f"C-{n}")
    await w.consume(*(record(action(f"birthday:C-{n}:2026", f"C-{n}")) for n in range(3)))
    w.mail.always = lambda: transient("smtp_451")

    first = await w.tick()
    assert {(o.outcome, o.reason) for o in outcomes(first)} == {("deferred", "smtp_451")}
    assert w.mail.calls == 3  # three failures in a row: the circuit is open now

    w.mail.always = None  # the provider is back, but the circuit does not know yet
    await w.consume(*(record(action(f"birthday:C-{n}:2026", f"C-{n}")) for n in range(3, 5)))
    w.clock.advance(seconds=LIMITS.retry_max_s)  # every retry is due
    paused = outcomes(await w.tick())
    assert len(paused) == 5
    assert {(o.outcome, o.reason, o.next_at) for o in paused} == {
        ("deferred", "circuit_open", T0 + cooldown)
    }
    assert {o.key: o.attempts for o in paused} == {
        **{f"birthday:C-{n}:2026": 1 for n in range(3)},  # a pause costs no attempt
        **{f"birthday:C-{n}:2026": 0 for n in range(3, 5)},
    }
    assert w.mail.calls == 3

    w.clock.now = T0 + cooldown - timedelta(seconds=1)
    assert (await w.tick()).messages == []
    w.clock.now = T0 + cooldown
    resumed = await w.tick()
    assert {(o.outcome, o.reason) for o in outcomes(resumed)} == {("sent", None)}
    assert {o.key: o.attempts for o in outcomes(resumed)} == {
        **{f"birthday:C-{n}:2026": 2 for n in range(3)},  # the failure and the send
        **{f"birthday:C-{n}:2026": 1 for n in range(3, 5)},
    }
    assert w.mail.calls == 8
    assert len(w.mail.delivered) == 5


class PooledMail(FakeMail):
    """A fake that, like :class:`SmtpPool` of size 1, sends one message at a time."""

    def __init__(self) -> None:
        super().__init__()
        self.size = 1
        self._slot = asyncio.Semaphore(1)

    async def send(self, mail: Mail) -> None:
        async with self._slot:
            await super().send(mail)


async def test_a_circuit_that_opens_during_a_tick_stops_the_rest_of_that_tick() -> None:
    w = make_world(breakers=Breakers(failures=3, cooldown=timedelta(minutes=5)), mail=PooledMail())
    for n in range(6):
        await w.customer(f"C-{n}")
    await w.consume(*(record(action(f"birthday:C-{n}:2026", f"C-{n}")) for n in range(6)))
    w.mail.always = lambda: transient("smtp_451")

    reasons = sorted(o.reason or "" for o in outcomes(await w.tick()))
    assert w.mail.calls == 3
    assert reasons == ["circuit_open"] * 3 + ["smtp_451"] * 3


# unknown recipients ---------------------------------------------------------------------------


async def test_an_unknown_recipient_is_waited_for_and_sent_to_once_the_contact_arrives() -> None:
    w = make_world()
    await w.consume(record(action("birthday:C-9:2026", "C-9")))
    (waiting,) = outcomes(await w.tick())
    assert (waiting.outcome, waiting.reason) == ("deferred", "unknown_recipient")
    assert waiting.next_at == T0 + LIMITS.unknown_recipient_retry
    assert w.mail.calls == 0

    await w.consume(customer_event("C-9", "韩梅梅", "han.meimei@example.com"))
    w.clock.now = T0 + LIMITS.unknown_recipient_retry
    assert summary(await w.tick()) == [("birthday:C-9:2026", "sent", None)]
    ((_, address),) = w.mail.delivered
    assert address == "han.meimei@example.com"


async def test_an_unknown_recipient_fails_after_the_wait() -> None:
    w = make_world()
    await w.consume(record(action("birthday:C-9:2026", "C-9")))
    (first,) = outcomes(await w.tick())
    assert (first.outcome, first.reason) == ("deferred", "unknown_recipient")
    w.clock.now = T0 + LIMITS.unknown_recipient_retry
    again = await w.tick()  # looked again: still unknown, not announced a second time
    assert outcomes(again) == []
    entry = await w.ledger.get("birthday:C-9:2026")
    assert entry is not None
    assert entry.deferrals == 2

    w.clock.now = T0 + LIMITS.unknown_recipient_wait
    result = await w.tick()
    assert summary(result) == [("birthday:C-9:2026", "failed", "unknown_recipient")]
    (dead,) = result.dead_letters
    assert dead.detail.startswith("unknown_recipient")
    assert w.mail.calls == 0


# policy across a tick -------------------------------------------------------------------------


async def test_the_frequency_cap_holds_across_one_tick_and_the_window() -> None:
    w = make_world(rules=Rules(quiet_start=None, quiet_end=None, marketing_cap=3))
    await w.customer()
    # consumed in the reverse order of their due times, which the tick goes by
    w.clock.now = T0 - timedelta(hours=1)
    due = [T0 - timedelta(minutes=10 - n) for n in range(5)]
    await w.consume(*(record(action(f"promo:C-1:{n}", due_at=due[n])) for n in reversed(range(5))))
    w.clock.now = T0
    assert summary(await w.tick()) == [
        ("promo:C-1:0", "sent", None),
        ("promo:C-1:1", "sent", None),
        ("promo:C-1:2", "sent", None),
        ("promo:C-1:3", "suppressed", "frequency_cap"),
        ("promo:C-1:4", "suppressed", "frequency_cap"),
    ]
    assert w.mail.calls == 3

    # the three sent count for the whole window (7 days), and transactional mail never counts
    await w.consume(
        record(action("promo:C-1:5", due_at=T0 + timedelta(days=6))),
        record(action("birthday:C-1:6", priority="transactional", due_at=T0 + timedelta(days=6))),
        record(action("promo:C-1:7", due_at=T0 + timedelta(days=8))),
    )
    w.clock.now = T0 + timedelta(days=6)
    assert summary(await w.tick()) == [
        ("birthday:C-1:6", "sent", None),
        ("promo:C-1:5", "suppressed", "frequency_cap"),
    ]
    w.clock.now = T0 + timedelta(days=8)
    assert summary(await w.tick()) == [("promo:C-1:7", "sent", None)]


async def test_quiet_hours_hold_back_mail_until_morning_but_not_webhooks() -> None:
    w = make_world(rules=Rules())  # 21:00-08:00 in the recipient's zone
    await w.customer(timezone="Asia/Shanghai")
    w.clock.now = datetime(2026, 6, 1, 14, 30, tzinfo=UTC)  # 22:30 in Shanghai
    await w.consume(
        record(action("birthday:C-1:2026")),
        record(action("birthday:C-1:hook", kind="webhook", due_at=w.clock.now)),
    )
    result = await w.tick()
    assert summary(result) == [
        ("birthday:C-1:2026", "deferred", "quiet_hours"),
        ("birthday:C-1:hook", "sent", None),
    ]
    morning = datetime(2026, 6, 2, 0, 0, tzinfo=UTC)  # 08:00 in Shanghai
    assert [o.next_at for o in outcomes(result) if o.outcome == "deferred"] == [morning]
    w.clock.now = morning - timedelta(seconds=1)
    assert (await w.tick()).messages == []
    w.clock.now = morning
    assert summary(await w.tick()) == [("birthday:C-1:2026", "sent", None)]
    assert w.mail.calls == 1


async def test_preferences_are_applied_per_recipient() -> None:
    w = make_world()
    await w.customer("C-1")
    await w.customer("C-2")
    await w.policy.set_preferences(Preferences(recipient="customer:C-1", channels={"email": False}))
    await w.consume(
        record(action("birthday:C-1:2026", "C-1")), record(action("birthday:C-2:2026", "C-2"))
    )
    assert summary(await w.tick()) == [
        ("birthday:C-1:2026", "suppressed", "channel_opt_out"),
        ("birthday:C-2:2026", "sent", None),
    ]
    assert [a for _, a in w.mail.delivered] == ["c-2@example.com"]


async def test_a_template_with_a_missing_variable_fails_without_calling_the_sender() -> None:
    w = make_world()
    await w.customer()
    await w.staff(chat_webhook_url=BOT_URL, chat_platform="dingtalk")
    await w.consume(
        record(action("birthday:C-1:2026", data={"customer_id": "C-1"})),
        record(
            action(
                "churn:C-1:alert",
                "S-1",
                kind="chat",
                template="churn_risk_alert",
                priority="transactional",
                recipient_kind="staff",
                data={"customer_id": "C-1"},
            )
        ),
    )
    result = await w.tick()
    assert summary(result) == [
        ("birthday:C-1:2026", "failed", "template_error"),
        ("churn:C-1:alert", "failed", "template_error"),
    ]
    assert len(result.dead_letters) == 2
    assert (w.mail.calls, w.chat.calls) == (0, 0)


@pytest.mark.parametrize(
    ("name", "address"),
    [("李\n雷", "li.lei@example.com"), ("José", "josé@example.com")],
    ids=["line-break-in-name", "non-ascii-local-part"],
)
async def test_a_contact_the_message_cannot_carry_fails_alone(name: str, address: str) -> None:
    w = make_world()
    await w.customer("C-2")
    await w.consume(
        customer_event("C-1", name, address),
        record(action("birthday:C-1:2026", "C-1")),
        record(action("birthday:C-2:2026", "C-2")),
    )
    assert (await w.directory.get(["customer:C-1"]))["customer:C-1"].email == address
    result = await w.tick()
    by_key = {o.key: o.outcome for o in outcomes(result)}
    assert by_key["birthday:C-2:2026"] == "sent"
    assert by_key["birthday:C-1:2026"] in ("sent", "failed")


# channels -------------------------------------------------------------------------------------


async def test_marketing_mail_carries_a_signed_unsubscribe_link_and_transactional_does_not() -> (
    None
):
    w = make_world()
    await w.customer()
    renewal = TEMPLATES.sample("renewal_customer_notice") | {"customer_name": "李雷"}
    await w.consume(
        record(action("birthday:C-1:2026")),
        record(
            action(
                "renewal:K-1:mail",
                template="renewal_customer_notice",
                priority="transactional",
                data=renewal,
            )
        ),
    )
    await w.tick()
    mails = {m["X-Upkeep-Key"]: m for m, _ in w.mail.delivered}
    assert mails["renewal:K-1:mail"]["List-Unsubscribe"] is None
    link = str(mails["birthday:C-1:2026"]["List-Unsubscribe"]).strip("<>")
    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    assert link.startswith("https://upkeep.example.com/v1/unsubscribe?")
    assert (query["r"], query["c"]) == ("customer:C-1", "marketing")
    assert w.unsubscribes.valid("customer:C-1", "marketing", query["t"])
    assert not w.unsubscribes.valid("customer:C-2", "marketing", query["t"])


async def test_chat_and_webhook_actions_reach_their_senders() -> None:
    w = make_world()
    await w.staff(chat_webhook_url=BOT_URL, chat_platform="dingtalk")
    alert = TEMPLATES.sample("churn_risk_alert") | {"customer_name": "Acme"}
    chat = action(
        "churn:C-1:alert",
        "S-1",
        kind="chat",
        template="churn_risk_alert",
        priority="transactional",
        recipient_kind="staff",
        data=alert,
        locale="en",
    )
    hook = action(
        "renewal:K-1:hook",
        kind="webhook",
        template="renewal_customer_notice",
        priority="transactional",
        data=TEMPLATES.sample("renewal_customer_notice"),
        locale="en",
    )
    await w.consume(record(chat), record(hook))
    assert summary(await w.tick()) == [
        ("churn:C-1:alert", "sent", None),
        ("renewal:K-1:hook", "sent", None),
    ]
    ((url, platform, title, text),) = w.chat.posted
    expected = TEMPLATES.render("churn_risk_alert", "zh-CN", alert, {"recipient_name": "王芳"})
    assert (url, platform) == (BOT_URL, "dingtalk")
    assert (title, text) == (expected.subject, expected.text)  # in the staff member's locale
    ((hook_url, msg_id, payload),) = w.webhook.posted
    assert (hook_url, msg_id) == (WEBHOOK_URL, "renewal:K-1:hook")
    assert payload["action"]["key"] == "renewal:K-1:hook"
    assert "K-2025-017" in payload["message"]["text"]


async def test_a_webhook_action_without_a_webhook_endpoint_fails() -> None:
    w = make_world(webhook_url=None)
    await w.consume(record(action("renewal:K-1:hook", kind="webhook", priority="transactional")))
    result = await w.tick()
    assert summary(result) == [("renewal:K-1:hook", "failed", "no_webhook_endpoint")]
    assert len(result.dead_letters) == 1
    assert w.webhook.calls == 0


async def test_a_task_action_creates_one_task_with_the_rendered_title() -> None:
    w = make_world(rules=Rules())  # quiet hours apply to messages, not to tasks
    await w.staff()  # reads zh-CN, in Shanghai
    data = TEMPLATES.sample("birthday_greeting_task")
    task = action(
        "birthday:C-1024:2026:task",
        "S-1",
        kind="task",
        template="birthday_greeting_task",
        priority="transactional",
        recipient_kind="staff",
        data=data,
        locale="en",
    )
    no_contact = action(
        "birthday:C-1024:2026:task2",
        "S-2",
        kind="task",
        template="birthday_greeting_task",
        priority="transactional",
        recipient_kind="staff",
        data=data,
        locale="en",
    )
    await w.consume(record(task), record(task), record(no_contact))
    w.clock.now = datetime(2026, 6, 1, 16, 0, tzinfo=UTC)  # midnight in Shanghai
    assert summary(await w.tick()) == [
        ("birthday:C-1024:2026:task", "sent", None),
        ("birthday:C-1024:2026:task2", "sent", None),
    ]
    by_id = {t.id: t for t in w.tasks.created}
    assert len(w.tasks.created) == 2
    zh = TEMPLATES.render("birthday_greeting_task", "zh-CN", data, {"recipient_name": "王芳"})
    en = TEMPLATES.render("birthday_greeting_task", "en", data)
    created = by_id["birthday:C-1024:2026:task"]
    assert (created.owner, created.title, created.description) == ("S-1", zh.subject, zh.text)
    assert (created.rule, created.subject, created.due_at) == ("birthday", "staff:S-1", T0)
    assert created.created_at == w.clock.now
    assert by_id["birthday:C-1024:2026:task2"].title == en.subject  # the action's own locale
    assert zh.subject != en.subject
    assert w.mail.calls == 0


# partitions -----------------------------------------------------------------------------------


async def test_only_the_partitions_given_to_the_tick_are_dispatched() -> None:
    w = make_world()
    for n in range(3):
        await w.customer(f"C-{n}")
    await w.consume(
        *(record(action(f"birthday:C-{n}:2026", f"C-{n}"), partition=n) for n in range(3))
    )
    result = await commit(await w.dispatcher.tick({1}))
    assert summary(result) == [("birthday:C-1:2026", "sent", None)]
    assert [a for _, a in w.mail.delivered] == ["c-1@example.com"]
    assert w.entry("birthday:C-0:2026").state == "pending"
    assert w.entry("birthday:C-2:2026").state == "pending"

    assert (await commit(await w.dispatcher.tick(set()))).messages == []
    assert summary(await w.tick(0, 2)) == [
        ("birthday:C-0:2026", "sent", None),
        ("birthday:C-2:2026", "sent", None),
    ]
    assert w.mail.calls == 3


# the daily digest ----------------------------------------------------------------------------


def reminder(n: int, owner: str = "S-1") -> dict[str, Any]:
    return action(
        f"renewal:K-{n}:2026-07-01:30d",
        owner,
        template="renewal_reminder",
        priority="transactional",
        recipient_kind="staff",
        data=TEMPLATES.sample("renewal_reminder") | {"contract_id": f"K-{n}"},
    )


async def test_an_owners_reminders_are_folded_into_one_daily_digest() -> None:
    # 08:30 in Shanghai is 00:30 UTC; T0 is 20:00 there, so the digest goes out tomorrow
    w = make_world(digest=Digest(time(8, 30), grace=timedelta(minutes=5)))
    await w.staff("S-1", email="wang.fang@example.com")
    await w.consume(*(record(reminder(n), partition=n % 2) for n in range(3)))
    held = outcomes(await w.tick(0, 1))
    assert {(o.outcome, o.reason) for o in held} == {("deferred", "digest")}
    moment = datetime(2026, 6, 2, 0, 30, tzinfo=UTC)
    digest = w.entry("digest:S-1:2026-06-02")
    assert (digest.next_at, digest.partition) == (moment, 0)

    w.clock.now = moment
    assert summary(await w.tick(0, 1)) == [("digest:S-1:2026-06-02", "sent", None)]
    # the members' outcomes are published by their partitions' owners at the next tick
    sent = await w.tick(0, 1)
    assert {k for k, o, r in summary(sent) if (o, r) == ("sent", "digest")} == {
        f"renewal:K-{n}:2026-07-01:30d" for n in range(3)
    }
    (mail, to) = w.mail.delivered[0]
    assert len(w.mail.delivered) == 1
    assert to == "wang.fang@example.com"
    body = mail.get_body(("plain",))
    assert body is not None
    assert all(f"K-{n}" in body.get_content() for n in range(3))

    # a reminder that arrives after today's digest went out waits for tomorrow's
    await w.consume(record(reminder(9), partition=1))
    (later,) = outcomes(await w.tick(0, 1))
    assert (later.outcome, later.reason) == ("deferred", "digest")
    assert later.next_at == datetime(2026, 6, 3, 0, 35, tzinfo=UTC)
    w.clock.now = datetime(2026, 6, 3, 0, 35, tzinfo=UTC)
    assert summary(await w.tick(0, 1)) == [("digest:S-1:2026-06-03", "sent", None)]
    assert summary(await w.tick(0, 1)) == [("renewal:K-9:2026-07-01:30d", "sent", "digest")]
    assert len(w.mail.delivered) == 2


async def test_a_member_its_digest_left_behind_is_delivered_on_its_own() -> None:
    w = make_world(digest=Digest(time(8, 30), grace=timedelta(minutes=5)))
    await w.staff("S-1", email="wang.fang@example.com")
    await w.consume(record(reminder(1)))
    await w.tick()
    # the digest went out without it (it joined between the digest's read and its send)
    w.ledger.entries["digest:S-1:2026-06-02"].state = "sent"
    w.clock.now = datetime(2026, 6, 2, 0, 35, tzinfo=UTC)
    assert summary(await w.tick()) == [("renewal:K-1:2026-07-01:30d", "sent", None)]
    assert len(w.mail.delivered) == 1


async def test_customer_mail_and_other_kinds_are_never_digested() -> None:
    w = make_world(digest=Digest(time(8, 30)))
    await w.customer()
    await w.staff("S-1", email="wang.fang@example.com")
    await w.consume(
        record(action("birthday:C-1:2026")),
        record(dict(reminder(1), kind="task")),
    )
    assert summary(await w.tick()) == [
        ("birthday:C-1:2026", "sent", None),
        ("renewal:K-1:2026-07-01:30d", "sent", None),
    ]


async def test_a_ledger_that_fails_mid_tick_stops_new_sends_so_few_can_repeat() -> None:
    """MongoDB goes away in the middle of a tick: the send whose ledger write failed cannot be
    recorded (it will be sent again: the documented window), but no further send starts in
    that tick, so an outage repeats at most the sends already in flight, not the whole tick."""
    w = make_world(mail=PooledMail())  # one SMTP connection: sends happen one after another
    for n in range(8):
        await w.customer(f"C-{n}")
    await w.consume(*(record(action(f"birthday:C-{n}:2026", f"C-{n}")) for n in range(8)))
    real_save, saves = w.ledger.save, {"sent": 0}

    async def save(entry: Any) -> None:
        if entry.state == "sent":
            saves["sent"] += 1
            if saves["sent"] >= 3:
                raise ConnectionError("MongoDB went away")
        await real_save(entry)

    w.ledger.save = save  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await w.tick()
    assert len(w.mail.delivered) == 3  # two recorded, the third sent and not recorded
    w.ledger.save = real_save  # type: ignore[method-assign]
    again = await w.tick()
    # the unrecorded one is sent again (the window); the other five for the first time
    assert len(w.mail.delivered) == 3 + 6
    # every action's outcome is published once the ledger is back (the two recorded before too)
    assert sorted(o.key for o in outcomes(again) if o.outcome == "sent") == sorted(
        f"birthday:C-{n}:2026" for n in range(8)
    )
    keys = [m["X-Upkeep-Key"] for m, _ in w.mail.delivered]
    assert len(set(keys)) == 8


async def test_a_new_action_due_now_asks_for_a_tick_and_a_full_tick_for_another() -> None:
    w = make_world(limits=dataclasses.replace(LIMITS, per_partition=2))
    await w.customer()
    later = action("birthday:C-1:2027", due_at=T0 + timedelta(days=365))
    assert not (await w.consume(record(later))).tick_soon  # next year: the interval will do
    assert not (await w.consume(record(later))).tick_soon  # nor a repeat of what is recorded
    batch = [record(action(f"birthday:C-1:{year}")) for year in (2026, 2025, 2024)]
    assert (await w.consume(*batch)).tick_soon  # due now: tick at once
    first = await w.tick()
    assert (len(outcomes(first)), first.tick_soon) == (2, True)  # stopped at its limit
    second = await w.tick()
    assert (len(outcomes(second)), second.tick_soon) == (1, False)
