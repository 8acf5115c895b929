"""``make bench-rules``: events evaluated per second, timers fired per second with 100,000 due,
and how the cost of a tick grows with the number of customers.

Runs the rules engine directly (no Kafka: publishing is ingest's and the loop's cost, measured
by ``make bench-ingest``) against the embedded MongoDB-wire server, and against the in-memory
stores as the baseline of pure rule evaluation, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

from deploy.local.stack import ephemeral_stack
from services.rules.engine import RulesEngine
from services.rules.journeys.catalog import Published
from services.rules.journeys.definition import parse_document, validate
from services.rules.journeys.files import journey_files
from services.rules.journeys.runner import Journeys
from services.rules.registry import load_rules, read_config
from services.rules.sdk import Timer
from services.rules.settings import DEFAULT_JOURNEYS_DIR, DEFAULT_RULES_FILE
from services.rules.state import CustomerState, SubjectState
from services.rules.store import (
    InMemorySubjectStore,
    InMemoryTimerStore,
    MongoSubjectStore,
    MongoTimerStore,
    PlacedTimer,
    SubjectStore,
    TimerChanges,
    TimerStore,
)
from shared.events.envelope import CanonicalEvent
from shared.events.types import resolve_type
from shared.kafka.messages import StoredRecord, canonical_message
from shared.mongo import make_client
from shared.settings import MongoSettings

NOW = datetime(2026, 6, 1, tzinfo=UTC)
PARTITIONS = set(range(6))


def history(customers: int) -> list[StoredRecord]:
    records, offset = [], 0
    for n in range(customers):
        for type_name, data in (
            (
                "customer.upserted",
                {
                    "customer_id": f"C-{n}",
                    "name": "X",
                    "timezone": "Asia/Shanghai",
                    "birthday": "1988-07-14",
                    "owner_id": "S-1",
                    "email": "x@example.com",
                },
            ),
            (
                "contract.upserted",
                {
                    "contract_id": f"K-{n}",
                    "customer_id": f"C-{n}",
                    "start_date": "2025-09-01",
                    "end_date": "2026-08-31",
                },
            ),
            (
                "customer.interaction",
                {
                    "interaction_id": f"I-{n}",
                    "customer_id": f"C-{n}",
                    "kind": "order",
                    "amount": "99",
                    "currency": "CNY",
                    "occurred_at": "2026-05-30T10:00:00+08:00",
                },
            ),
        ):
            payload = resolve_type(type_name).model_validate(data)  # type: ignore[union-attr]
            event = CanonicalEvent.build(
                event_id=f"e-{offset}", source="bench", payload=payload, time=NOW, source_offset="Z"
            )
            m = canonical_message("events", event)
            records.append(StoredRecord("events", n % 6, offset, m.value, m.key))
            offset += 1
    return records


# a journey every customer of the history enters (its first order), beside the shipped three
BENCH_JOURNEY = {
    "name": "bench-first-order",
    "subject": "customer",
    "trigger": {"event": "customer.interaction", "when": 'event.kind == "order"'},
    "goal": {"when": "subject.orders > 3"},
    "exits": [{"when": 'subject.tier == "C"'}],
    "steps": [
        {"id": "thanks", "send": {"to": "customer", "template": "birthday_greeting"}},
        {"id": "week", "wait": {"for": "7d"}},
        {"id": "call", "send": {"kind": "task", "to": "owner", "template": "channel_checkin"}},
    ],
}


def journeys_on() -> list[Published]:
    """The shipped journeys and :data:`BENCH_JOURNEY`, switched on."""
    found = [
        validate(parse_document(path.read_text(encoding="utf-8"), path.name))
        for path in journey_files(DEFAULT_JOURNEYS_DIR)
    ]
    return [Published(j.name, 1, j, enabled=True) for j in [*found, validate(BENCH_JOURNEY)]]


def engine(
    subjects: SubjectStore,
    timers: TimerStore,
    now: list[datetime],
    journeys: list[Published] | None = None,
) -> RulesEngine:
    config = read_config(DEFAULT_RULES_FILE)
    rules = load_rules(config)
    for rule in rules:
        if isinstance(rule, Journeys) and journeys:
            rule.catalog.replace(journeys, [])
    return RulesEngine(
        rules,
        subjects,
        timers,
        events_topic="events",
        actions_topic="actions",
        config=config,
        clock=lambda: now[0],
    )


async def events_per_second(
    subjects: SubjectStore,
    timers: TimerStore,
    customers: int,
    journeys: list[Published] | None = None,
) -> float:
    records = history(customers)
    e = engine(subjects, timers, [NOW], journeys)
    started = time.perf_counter()
    for i in range(0, len(records), 500):
        await e.handle(records[i : i + 500])
    return len(records) / (time.perf_counter() - started)


async def timers_per_second(
    subjects: SubjectStore, timers: TimerStore, due: int
) -> tuple[float, int]:
    per_customer = 5
    customers = due // per_customer
    await subjects.save(
        SubjectState(
            id=f"customer:B-{n}",
            customer=CustomerState(
                customer_id=f"B-{n}",
                timezone="UTC",
                birthday=datetime(1990, 1, 1).date(),
                email="b@example.com",
                owner_id="S-1",
            ),
        )
        for n in range(customers)
    )
    changes = TimerChanges(
        sets=[
            PlacedTimer(
                Timer(
                    "birthday",
                    f"customer:B-{n}",
                    f"birthday:{2020 + k}",
                    NOW - timedelta(hours=k + 1),
                    {"year": 2020 + k},
                ),
                n % 6,
            )
            for n in range(customers)
            for k in range(per_customer)
        ]
    )
    for i in range(0, len(changes.sets), 5000):
        await timers.apply(TimerChanges(sets=changes.sets[i : i + 5000]))
    e = engine(subjects, timers, [NOW])
    fired, actions, started = 0, 0, time.perf_counter()
    while True:
        result = await e.tick(PARTITIONS)
        if not result.after_commit:
            break
        actions += len(result.messages)
        for hook in result.after_commit:
            outcome = hook()
            if outcome is not None:
                await outcome
        fired += 1000
    return min(fired, due) / (time.perf_counter() - started), actions


async def empty_tick_ms(timers: TimerStore, pending: int) -> float:
    future = NOW + timedelta(days=365)
    sets = [
        PlacedTimer(Timer("birthday", f"customer:F-{n}", "birthday:2027", future), n % 6)
        for n in range(pending)
    ]
    for i in range(0, len(sets), 5000):
        await timers.apply(TimerChanges(sets=sets[i : i + 5000]))
    e = engine(InMemorySubjectStore(), timers, [NOW])
    started = time.perf_counter()
    for _ in range(20):
        await e.tick(PARTITIONS)
    return (time.perf_counter() - started) / 20 * 1000


async def run(customers: int, due: int) -> None:
    print(f"rules engine, {customers} customers x 3 events; {due} timers due")
    memory_rate = await events_per_second(InMemorySubjectStore(), InMemoryTimerStore(), customers)
    print(f"  events evaluated, in-memory stores:   {memory_rate:>9,.0f} events/s")
    on = journeys_on()
    with_journeys = await events_per_second(
        InMemorySubjectStore(), InMemoryTimerStore(), customers, on
    )
    print(
        f"  ... with {len(on)} journeys switched on: {with_journeys:>9,.0f} events/s "
        f"({with_journeys / memory_rate:.2f} of none; every customer enters one)"
    )
    memory_fire, _ = await timers_per_second(InMemorySubjectStore(), InMemoryTimerStore(), due)
    print(f"  timers fired, in-memory stores:       {memory_fire:>9,.0f} timers/s")
    with ephemeral_stack("bench-rules") as stack:
        client = make_client(MongoSettings(uri=stack.mongo_uri), "bench")
        db = client[f"bench_{uuid.uuid4().hex[:6]}"]
        timers = MongoTimerStore(db["timers"])
        await timers.ensure_indexes()
        rate = await events_per_second(MongoSubjectStore(db["subjects"]), timers, customers)
        print(
            f"  events evaluated, MongoDB stores:     {rate:>9,.0f} events/s "
            f"({rate / memory_rate:.2f} of in-memory)"
        )
        fire, actions = await timers_per_second(
            MongoSubjectStore(db["subjects"]), MongoTimerStore(db["timers"]), due
        )
        print(
            f"  timers fired, MongoDB stores:         {fire:>9,.0f} timers/s "
            f"({actions} actions; {fire / memory_fire:.2f} of in-memory)"
        )
        small = MongoTimerStore(db["ticks_small"])
        await small.ensure_indexes()
        large = MongoTimerStore(db["ticks_large"])
        await large.ensure_indexes()
        few, many = await empty_tick_ms(small, 1_000), await empty_tick_ms(large, 10 * 1_000)
        print(
            f"  a tick with nothing due: {few:.1f} ms with 1,000 pending timers, "
            f"{many:.1f} ms with 10,000 (x{many / few:.2f} for 10x the customers)"
        )
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--due", type=int, default=100_000)
    args = parser.parse_args(argv)
    asyncio.run(run(args.customers, args.due))
    return 0


if __name__ == "__main__":
    sys.exit(main())
