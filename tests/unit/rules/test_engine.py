"""The rules engine with in-memory stores: events in, timers and actions out."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from services.rules.builtin.renewal import ContractRenewal
from services.rules.engine import LAST_TICK, OVERDUE, RulesEngine
from services.rules.sdk import Action, Decision, Recipient, RuleContext, Schedule, SetTimer
from services.rules.state import CustomerState, SubjectState
from services.rules.store import InMemorySubjectStore, InMemoryTimerStore
from services.rules.ticklog import TickEntry
from shared.events.actions import ActionMessage
from shared.events.envelope import CanonicalEvent
from shared.events.types import resolve_type
from shared.kafka.messages import HandlerResult, Outgoing, StoredRecord

NOW = [datetime(2026, 5, 1, tzinfo=UTC)]
EVENTS = "events"


class Broken:
    name = "broken"
    templates: Mapping[str, frozenset[str]] = {}

    def on_event(self, *_: Any) -> Iterator[Decision]:
        raise RuntimeError("bug in a rule")

    def on_timer(self, *_: Any) -> Iterator[Decision]:
        raise RuntimeError("bug in a rule")


def record(offset: int, type_name: str, partition: int = 3, **data: Any) -> StoredRecord:
    payload = resolve_type(type_name).model_validate(data)  # type: ignore[union-attr]
    event = CanonicalEvent.build(
        event_id=f"e-{offset}", source="t", payload=payload, time=NOW[0], source_offset="Z"
    )
    return StoredRecord(EVENTS, partition, offset, event.to_json(), event.subject.encode())


@pytest.fixture
def engine() -> RulesEngine:
    NOW[0] = datetime(2026, 5, 1, tzinfo=UTC)
    return RulesEngine(
        [Broken(), ContractRenewal()],
        InMemorySubjectStore(),
        InMemoryTimerStore(),
        events_topic=EVENTS,
        actions_topic="actions",
        clock=lambda: NOW[0],
    )


HISTORY: list[tuple[str, dict[str, Any]]] = [
    ("staff.upserted", {"staff_id": "S-1", "name": "O", "timezone": "UTC", "manager_id": "S-2"}),
    ("staff.upserted", {"staff_id": "S-2", "name": "M", "timezone": "UTC"}),
    (
        "customer.upserted",
        {
            "customer_id": "C-1",
            "name": "Acme",
            "timezone": "UTC",
            "owner_id": "S-1",
            "channel_id": "CH-9",
        },
    ),
    (
        "customer.tier_changed",
        {
            "customer_id": "C-1",
            "tier": "B",
            "recency_score": 2,
            "frequency_score": 2,
            "monetary_score": 2,
            "changed_at": "2025-06-01T00:00:00Z",
        },
    ),
    (
        "contract.upserted",
        {
            "contract_id": "K-1",
            "customer_id": "C-1",
            "start_date": "2025-06-01",
            "end_date": "2026-05-31",
        },
    ),
]


async def test_events_plan_timers_and_due_timers_become_actions(engine: RulesEngine) -> None:
    result = await engine.handle([record(n, t, **d) for n, (t, d) in enumerate(HISTORY)])
    assert result.messages == []
    assert result.dead_letters == []
    timers = await engine._timers.pending("customer:C-1")
    assert [t.name for t in timers] == [
        "K-1:2026-05-31:30d",
        "K-1:2026-05-31:7d",
        "K-1:2026-05-31:1d",
        "K-1:2026-05-31:overdue",
    ]
    NOW[0] = datetime(2026, 6, 2, tzinfo=UTC)
    assert (await engine.tick({0})).messages == []  # not our partition
    fired = await engine.tick({3})
    actions = [ActionMessage.model_validate_json(m.value) for m in fired.messages]
    assert [a.key for a in actions] == [
        "renewal:K-1:2026-05-31:30d",
        "renewal:K-1:2026-05-31:7d",
        "renewal:K-1:2026-05-31:1d",
        "renewal:K-1:2026-05-31:overdue",
    ]
    assert actions[-1].recipient.id == "S-2"  # escalated to the owner's manager
    # what ops sees: how late the oldest due timer was, and when this replica last ticked
    earliest = min(a.due_at for a in actions)
    assert OVERDUE._value.get() == (NOW[0] - earliest).total_seconds() > 0
    assert LAST_TICK._value.get() == NOW[0].timestamp()
    await engine.tick({3})  # the same timers again, until committed
    assert OVERDUE._value.get() > 0
    # each carries whom the customer belonged to when decided (analytics attributes by it)
    assert {tuple(sorted(a.context.items())) for a in actions} == {
        (("channel", "CH-9"), ("owner", "S-1"), ("tier", "B"))
    }
    assert all(m.key == b"customer:C-1" for m in fired.messages)
    assert len(await engine._timers.pending("customer:C-1")) == 4  # until committed
    for hook in fired.after_commit:  # as the consumer loop runs them: sync or async
        outcome = hook()
        if outcome is not None:
            await outcome
    assert await engine._timers.pending("customer:C-1") == []
    await engine.tick({3})
    assert OVERDUE._value.get() == 0  # nothing due any more


async def test_a_redelivered_batch_decides_the_same_again(engine: RulesEngine) -> None:
    batch = [record(n, t, **d) for n, (t, d) in enumerate(HISTORY)]
    await engine.handle(batch)
    before = await engine._timers.pending("customer:C-1")
    await engine.handle(batch)
    assert await engine._timers.pending("customer:C-1") == before


async def test_bad_events_are_dead_lettered_and_the_rest_flow(engine: RulesEngine) -> None:
    good = record(9, HISTORY[2][0], **HISTORY[2][1])
    bad = StoredRecord(EVENTS, 3, 10, b"{not json")
    alien = StoredRecord(
        EVENTS,
        3,
        11,
        orjson.dumps({**orjson.loads(good.value or b"{}"), "type": "upkeep.unknown.v9"}),
    )
    result = await engine.handle([bad, good, alien])
    assert [(d.record.offset, d.reason) for d in result.dead_letters] == [
        (10, "invalid_event"),
        (11, "unknown_type"),
    ]
    assert "customer:C-1" in engine._subjects.states  # type: ignore[attr-defined]


async def test_renewal_event_cancels_the_pending_reminders(engine: RulesEngine) -> None:
    await engine.handle([record(n, t, **d) for n, (t, d) in enumerate(HISTORY)])
    await engine.handle(
        [
            record(
                20,
                "contract.cancelled",
                contract_id="K-1",
                customer_id="C-1",
                cancelled_at="2026-05-02T00:00:00Z",
            )
        ]
    )
    NOW[0] += timedelta(days=60)
    assert await engine._timers.pending("customer:C-1") == []
    assert (await engine.tick({3})).messages == []


def customer_state(cid: str, **fields: Any) -> CustomerState:
    return CustomerState(customer_id=cid, name=cid, timezone="UTC", **fields)


class FakeTickLog:
    """Keeps the last entry per partition as if every tick's transaction committed; a
    partition in ``undecided`` is reported as not settled."""

    def __init__(self) -> None:
        self.entries: dict[int, TickEntry] = {}
        self.undecided: set[int] = set()
        self.asked: list[set[int]] = []

    def entry(self, entry: TickEntry) -> Outgoing:
        self.entries[entry.partition] = entry
        return Outgoing("ticks", entry.model_dump_json().encode(), partition=entry.partition)

    async def last(self, partitions: Collection[int]) -> dict[int, TickEntry | None]:
        self.asked.append(set(partitions))
        return {p: self.entries.get(p) for p in partitions if p not in self.undecided}

    async def close(self) -> None:
        return None


@dataclass
class Daily:
    """A rule with a scheduled job: every day at 00:00 UTC, one action per customer named in
    the job's subjects (those with a tier of A)."""

    name: str = "daily"
    templates: Mapping[str, frozenset[str]] = field(default_factory=dict)
    runs: list[tuple[datetime, list[str]]] = field(default_factory=list)

    @property
    def schedules(self) -> tuple[Schedule, ...]:
        return (Schedule("list", hour_utc=0, kind="customer", where={"customer.tier": "A"}),)

    def on_event(self, event: Any, state: Any, ctx: Any) -> Iterator[Decision]:
        return iter(())

    def on_timer(self, timer: Any, state: Any, ctx: Any) -> Iterator[Decision]:
        return iter(())

    def on_schedule(
        self, job: Schedule, slot: datetime, subjects: Any, ctx: RuleContext
    ) -> list[Action]:
        self.runs.append((slot, [s.id for s in subjects]))
        return [
            Action(
                f"daily:{s.id}:{slot.date()}",
                self.name,
                s.id,
                "task",
                Recipient("staff", "S-1"),
                "t",
                "en",
                slot,
            )
            for s in subjects
        ]


def engine_with(
    ticklog: FakeTickLog,
    timers: InMemoryTimerStore,
    daily: Daily,
    subjects: InMemorySubjectStore | None = None,
) -> RulesEngine:
    return RulesEngine(
        [ContractRenewal(), daily],
        subjects or InMemorySubjectStore(),
        timers,
        events_topic=EVENTS,
        actions_topic="actions",
        clock=lambda: NOW[0],
        ticklog=ticklog,
    )


async def test_a_new_owner_does_not_fire_what_the_last_committed_tick_fired() -> None:
    NOW[0] = datetime(2026, 5, 1, tzinfo=UTC)
    ticklog, timers, daily = FakeTickLog(), InMemoryTimerStore(), Daily()
    first = engine_with(ticklog, timers, daily)
    await first.handle([record(n, t, **d) for n, (t, d) in enumerate(HISTORY)])
    NOW[0] = datetime(2026, 5, 25, 2, tzinfo=UTC)  # the 30d and 7d reminders are due
    owned = {0, 3}
    fired = await first.tick(owned)
    tick_records = [m for m in fired.messages if m.topic == "ticks"]
    partitions = [m.partition for m in tick_records]
    assert None not in partitions
    assert sorted(p for p in partitions if p is not None) == [0, 3]  # 0: the daily job ran
    assert [t.name for t in ticklog.entries[3].timers()] == [
        "K-1:2026-05-31:30d",
        "K-1:2026-05-31:7d",
    ]
    assert ticklog.entries[0].slots() == {"daily/list": datetime(2026, 5, 25, tzinfo=UTC)}
    # the process dies after the commit, before its after-commit hooks delete the timers

    second = engine_with(ticklog, timers, daily)
    again = await second.tick(owned)
    assert again.messages == []  # neither the reminders nor the daily job run again
    assert [t.name for t in await timers.pending("customer:C-1")] == [
        "K-1:2026-05-31:1d",
        "K-1:2026-05-31:overdue",
    ]
    assert [slot for slot, _ in daily.runs] == [datetime(2026, 5, 25, tzinfo=UTC)]
    assert ticklog.asked == [{0, 3}, {0, 3}]  # each engine settles once...
    await second.tick(owned)
    assert len(ticklog.asked) == 2  # ...and does not read a settled partition again


async def test_an_undecided_partition_is_not_ticked_until_it_settles() -> None:
    NOW[0] = datetime(2026, 5, 1, tzinfo=UTC)
    ticklog, timers = FakeTickLog(), InMemoryTimerStore()
    engine = engine_with(ticklog, timers, Daily())
    await engine.handle([record(n, t, **d) for n, (t, d) in enumerate(HISTORY)])
    NOW[0] = datetime(2026, 5, 25, 2, tzinfo=UTC)
    ticklog.undecided = {3}
    owned = {3}
    assert (await engine.tick(owned)).messages == []
    ticklog.undecided = set()
    fired = await engine.tick(owned)
    keys = [
        ActionMessage.model_validate_json(m.value).key
        for m in fired.messages
        if m.topic == "actions"
    ]
    assert keys == ["renewal:K-1:2026-05-31:30d", "renewal:K-1:2026-05-31:7d"]


async def test_revoked_partitions_are_settled_again_when_they_come_back() -> None:
    ticklog = FakeTickLog()
    engine = engine_with(ticklog, InMemoryTimerStore(), Daily())
    owned = {3}
    await engine.tick(owned)
    await engine.tick(owned)
    engine.revoked(owned)
    await engine.tick(owned)
    assert ticklog.asked == [{3}, {3}]


async def test_a_scheduled_job_gets_the_subjects_it_asks_for_once_per_slot() -> None:
    NOW[0] = datetime(2026, 5, 25, 2, tzinfo=UTC)
    subjects = InMemorySubjectStore()
    await subjects.save(
        [
            SubjectState(id="customer:C-1", customer=customer_state("C-1", tier="A")),
            SubjectState(id="customer:C-2", customer=customer_state("C-2", tier="B")),
            SubjectState(id="customer:C-3", customer=customer_state("C-3", tier="A")),
        ]
    )
    ticklog, daily = FakeTickLog(), Daily()
    engine = engine_with(ticklog, InMemoryTimerStore(), daily, subjects)
    assert (await engine.tick({3})).messages == []  # only the owner of partition 0 runs jobs
    result = await engine.tick({0})
    assert action_keys(result) == ["daily:customer:C-1:2026-05-25", "daily:customer:C-3:2026-05-25"]
    assert daily.runs == [(datetime(2026, 5, 25, tzinfo=UTC), ["customer:C-1", "customer:C-3"])]
    # not committed (say the transaction failed): the slot is not done, the job runs again
    assert len(action_keys(await engine.tick({0}))) == 2
    for hook in result.after_commit:
        outcome = hook()
        if outcome is not None:
            await outcome
    NOW[0] = datetime(2026, 5, 25, 23, tzinfo=UTC)
    await engine.tick({0})
    assert len(daily.runs) == 2  # committed: not again until the next day's slot
    NOW[0] = datetime(2026, 5, 26, 0, 5, tzinfo=UTC)
    await engine.tick({0})
    assert daily.runs[-1][0] == datetime(2026, 5, 26, tzinfo=UTC)


def action_keys(result: HandlerResult) -> list[str]:
    return [
        ActionMessage.model_validate_json(m.value).key
        for m in result.messages
        if m.topic == "actions"
    ]


def test_an_older_tick_log_entry_names_the_churn_weekly_list_slot() -> None:
    entry = TickEntry(partition=0, weekly_slot=datetime(2026, 5, 25, 1, tzinfo=UTC))
    assert entry.slots() == {"churn/weekly-at-risk": datetime(2026, 5, 25, 1, tzinfo=UTC)}


def test_a_schedule_slot_is_the_latest_moment_at_or_before_now() -> None:
    weekly = Schedule("w", hour_utc=1, kind="customer", weekday=0)  # Mondays, 01:00 UTC
    wednesday = datetime(2026, 11, 25, 12, tzinfo=UTC)
    assert weekly.slot(wednesday) == datetime(2026, 11, 23, 1, tzinfo=UTC)
    assert weekly.slot(datetime(2026, 11, 23, 0, 59, tzinfo=UTC)) == datetime(
        2026, 11, 16, 1, tzinfo=UTC
    )
    assert weekly.slot(datetime(2026, 11, 23, 1, tzinfo=UTC)) == datetime(
        2026, 11, 23, 1, tzinfo=UTC
    )
    daily = Schedule("d", hour_utc=6, kind="channel")
    assert daily.slot(datetime(2026, 11, 25, 5, tzinfo=UTC)) == datetime(
        2026, 11, 24, 6, tzinfo=UTC
    )


class FollowUpNow:
    """Sets a timer due at once for every event, and does nothing when it fires."""

    name = "now"
    templates: Mapping[str, frozenset[str]] = {}

    def on_event(self, event: Any, state: Any, ctx: Any) -> Iterator[Decision]:
        yield SetTimer("at-once", ctx.now)

    def on_timer(self, *_: Any) -> Iterator[Decision]:
        return iter(())


def in_memory(*rules: Any, timers_per_tick: int = 1000) -> RulesEngine:
    return RulesEngine(
        list(rules),
        InMemorySubjectStore(),
        InMemoryTimerStore(),
        events_topic=EVENTS,
        actions_topic="actions",
        clock=lambda: NOW[0],
        timers_per_tick=timers_per_tick,
    )


async def run_hooks(result: Any) -> None:
    for hook in result.after_commit:
        done = hook()
        if done is not None:
            await done


async def test_work_due_now_asks_for_a_tick_and_a_tick_at_its_limit_for_another() -> None:
    NOW[0] = datetime(2026, 5, 1, tzinfo=UTC)
    engine = in_memory(ContractRenewal(), timers_per_tick=3)
    planned = await engine.handle([record(n, t, **d) for n, (t, d) in enumerate(HISTORY)])
    assert not planned.tick_soon  # the reminders are weeks away: the interval will do
    NOW[0] = datetime(2026, 6, 2, tzinfo=UTC)  # all four are due now, three fire per tick
    first = await engine.tick({3})
    assert (len(first.messages), first.tick_soon) == (3, True)  # stopped at its limit
    await run_hooks(first)
    second = await engine.tick({3})
    assert (len(second.messages), second.tick_soon) == (1, False)  # all done: back to pacing

    now_engine = in_memory(FollowUpNow())
    type_name, data = HISTORY[2]
    due_now = await now_engine.handle([record(0, type_name, **data)])
    assert due_now.tick_soon
