"""Rules as separate processes on the real clock: timers fired once across kill -9 and failover.

Each customer places an order; the follow-up rule is configured to follow up the same day at a
moment a few seconds ahead, so a few hundred timers come due together while the test kills a
process. Firing is slowed to a few timers per tick so the kill lands in the middle of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from deploy.local.stack import LocalStack
from shared.events.envelope import CanonicalEvent
from shared.events.types import resolve_type
from shared.settings import KafkaSettings, TopicSettings
from tests.e2e.replicas import Replicas
from tests.kafka_helpers import publish_events, read_topic
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

CUSTOMERS = 300


def canonical(event_id: str, type_name: str, at: datetime, **data: object) -> CanonicalEvent:
    payload = resolve_type(type_name).model_validate(data)  # type: ignore[union-attr]
    return CanonicalEvent.build(
        event_id=event_id, source="e2e", payload=payload, time=at, source_offset="Z"
    )


def orders_due_at(due: datetime) -> list[CanonicalEvent]:
    """A customer and an order for each, ordered the day the follow-up is due."""
    day = due.replace(hour=0, minute=0, second=0, microsecond=0)
    events = []
    for n in range(CUSTOMERS):
        events.append(
            canonical(
                f"c-{n}",
                "customer.upserted",
                day,
                customer_id=f"C-{n}",
                name=f"Customer {n}",
                timezone="UTC",
                email=f"c{n}@example.com",
            )
        )
        events.append(
            canonical(
                f"o-{n}",
                "customer.interaction",
                day,
                interaction_id=f"O-{n}",
                customer_id=f"C-{n}",
                kind="order",
                amount="99.00",
                currency="EUR",
                occurred_at=day.isoformat(),
            )
        )
    return events


@pytest.fixture
def rules_procs(
    stack: LocalStack, topics: TopicSettings, tmp_path: Path
) -> Iterator[tuple[Replicas, datetime]]:
    due = (datetime.now(UTC) + timedelta(seconds=25)).replace(microsecond=0)
    if due.date() != (due + timedelta(seconds=60)).date():
        pytest.skip("too close to midnight UTC for a same-day follow-up")
    config = tmp_path / "rules.yaml"
    steps = {tier: {"after_days": 0, "kind": "email"} for tier in "ABC"}
    followup = {"local_time": due.time().isoformat(), "by_tier": steps}
    config.write_text(orjson.dumps({"followup": followup}).decode())
    procs = Replicas(
        stack,
        "rules",
        topics,
        {
            "UPKEEP_RULES_CONFIG_FILE": str(config),
            "UPKEEP_RULES_ENABLED": "followup",
            "UPKEEP_RULES_TICK_INTERVAL_S": "0.1",
            "UPKEEP_RULES_TIMERS_PER_TICK": "5",
        },
    )
    try:
        yield procs, due
    finally:
        procs.stop_all()


async def sleep_until(moment: datetime) -> None:
    await asyncio.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


async def action_keys(kafka: KafkaSettings, topic: str) -> list[str]:
    records = await read_topic(kafka, topic, expect=CUSTOMERS, timeout=120, settle=4)
    return [orjson.loads(r.value)["key"] for r in records]


async def committed_count(kafka: KafkaSettings, topic: str) -> int:
    """How many records the topic holds now (committed ones, read to its end)."""
    return len(await read_topic(kafka, topic, expect=0, timeout=30, settle=0))


EXPECTED = {f"followup:O-{n}" for n in range(CUSTOMERS)}


async def test_kill_9_while_timers_fire_repeats_and_loses_none(
    rules_procs: tuple[Replicas, datetime], kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    procs, due = rules_procs
    first = await asyncio.to_thread(procs.start, "a")
    await publish_events(kafka_settings, topics.events, orders_due_at(due))
    fired_at_kill: list[int] = []
    for _ in range(2):  # two crashes while the timers are being fired
        before = fired_at_kill[-1] if fired_at_kill else 0

        async def firing(before: int = before) -> bool:
            """This process has fired (and committed) some timers, or all are fired."""
            count = await committed_count(kafka_settings, topics.actions)
            return count > before or count == CUSTOMERS

        # from the moment they come due, however long this busy machine takes to get there
        await sleep_until(due)
        await eventually(firing, 120, what=f"no timer fired after the first {before}")
        first.kill()
        fired_at_kill.append(await committed_count(kafka_settings, topics.actions))
        first = await asyncio.to_thread(procs.start, "a")  # same instance id: fences the old

    keys = await action_keys(kafka_settings, topics.actions)
    assert fired_at_kill[0] < CUSTOMERS, f"the kill came after the firing: {fired_at_kill}"
    assert len(keys) == len(set(keys)), "a timer fired twice"
    assert set(keys) == EXPECTED, "a timer was lost"


async def test_a_replica_killed_while_firing_hands_over_without_repeats(
    rules_procs: tuple[Replicas, datetime], kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    """b dies with a tick transaction open: a takes b's partitions after the session timeout
    and ticks them only once b's transaction is aborted (the tick log is then settled)."""
    procs, due = rules_procs
    await asyncio.to_thread(procs.start, "a")
    b = await asyncio.to_thread(procs.start, "b")
    await publish_events(kafka_settings, topics.events, orders_due_at(due))
    await sleep_until(due + timedelta(seconds=1.5))
    b.kill()

    keys = await action_keys(kafka_settings, topics.actions)
    assert len(keys) == len(set(keys)), "a timer fired twice"
    assert set(keys) == EXPECTED, "a timer was lost"
