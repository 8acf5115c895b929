"""The people side through the real broker and MongoDB-wire server, with a chosen clock:
unowned customers and channels are assigned (inactive and away staff skipped), an untouched
A-tier customer gets a revisit task, the task is not done and escalates two levels, then it is
completed and the escalation stops; analytics counts each step, and replaying everything —
rules and analytics from offset 0 into their existing databases — changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka.structs import ConsumerRecord
from prometheus_client import REGISTRY

from services.rules.store import MongoTimerStore
from shared.events.envelope import CanonicalEvent
from shared.events.types import resolve_type
from shared.mongo import make_client
from shared.settings import KafkaSettings, MongoSettings, TopicSettings
from tests.integration.test_analytics_kafka import analytics, consumed, counters
from tests.integration.test_rules_kafka import Clock, running, settings_for
from tests.kafka_helpers import publish_events, read_topic, wait_consumed
from tests.waiting import eventually

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 2, tzinfo=UTC)
RULES = {
    "assignment": {"territories": [{"region": "East", "team": "east"}]},
    "revisit": {"local_time": "10:00"},
    "task-escalation": {"escalate_after_hours": [24, 48, 72], "kind": "email"},
}


def event(n: str, type_name: str, at: datetime = START, **data: Any) -> CanonicalEvent:
    payload = resolve_type(type_name).model_validate(data)  # type: ignore[union-attr]
    return CanonicalEvent.build(
        event_id=n, source="test", payload=payload, time=at, source_offset="Z"
    )


def staff(staff_id: str, **extra: Any) -> CanonicalEvent:
    return event(
        f"staff-{staff_id}",
        "staff.upserted",
        staff_id=staff_id,
        name=f"Staff {staff_id}",
        timezone="UTC",
        email=f"{staff_id.lower()}@example.com",
        **extra,
    )


STAFF = [
    staff("E-1"),
    staff("D-1", manager_id="E-1"),
    staff("M-1", manager_id="D-1"),
    staff("S-1", team="east", manager_id="M-1", active=False),  # left: skipped
    staff("S-2", team="east", manager_id="M-1"),
    staff("S-3", team="east", manager_id="M-1", away_until="2026-12-31"),  # away: skipped
]
SUBJECTS = [
    event(
        "c-1", "customer.upserted", customer_id="C-1", name="Acme", timezone="UTC", region="East"
    ),
    event(
        "t-1",
        "customer.tier_changed",
        customer_id="C-1",
        tier="A",
        recency_score=3,
        frequency_score=3,
        monetary_score=3,
        changed_at=START.isoformat(),
    ),
    event(
        "ch-1",
        "channel.upserted",
        channel_id="CH-1",
        name="Dealer",
        timezone="UTC",
        region="East",
        email="orders@dealer.example",
    ),
]


# what analytics must have counted: each step once
STEPS = {
    "assignments": 2,
    "assignments.unowned": 2,
    "tasks.created": 1,
    "tasks.overdue": 1,
    "tasks.escalated": 2,
    "tasks.escalated.level_1": 1,
    "tasks.escalated.level_2": 1,
    "tasks.completed": 1,
}


def last_tick() -> float:
    return REGISTRY.get_sample_value("upkeep_rules_last_tick_timestamp_seconds") or 0.0


def parsed(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


async def events_of(kafka: KafkaSettings, topics: TopicSettings, kind: str) -> list[dict[str, Any]]:
    records = await read_topic(kafka, topics.events, expect=0, timeout=30, settle=0)
    return [e for e in parsed(records) if e["type"] == f"upkeep.{kind}.v1"]


async def wait_events(
    kafka: KafkaSettings, topics: TopicSettings, kind: str, count: int
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def enough() -> bool:
        found[:] = await events_of(kafka, topics, kind)
        return len(found) >= count

    await eventually(enough, 60, interval=0.3, what=lambda: f"{kind}: {found}")
    return found


async def everything(kafka: KafkaSettings, topics: TopicSettings) -> tuple[int, int]:
    events = await read_topic(kafka, topics.events, expect=0, timeout=30, settle=0)
    actions = await read_topic(kafka, topics.actions, expect=0, timeout=30, settle=0)
    return len(events), len(actions)


async def test_assign_revisit_escalate_complete_and_replay(
    kafka_settings: KafkaSettings,
    mongo_settings: MongoSettings,
    topics: TopicSettings,
    tmp_path: Path,
) -> None:
    tag = uuid.uuid4().hex[:8]
    config = tmp_path / "rules.yaml"
    config.write_text(yaml.safe_dump(RULES), encoding="utf-8")
    clock = Clock(START)
    settings = settings_for(
        kafka_settings, mongo_settings, topics, f"people_{tag}", f"rules-{tag}", "a"
    ).model_copy(update={"config_file": config, "enabled": "assignment,revisit,task-escalation"})
    kafka = kafka_settings
    async with running(settings, clock):
        await publish_events(kafka, topics.events, STAFF)
        await wait_consumed(kafka, settings.consumer_group, [topics.events])
        await publish_events(kafka, topics.events, SUBJECTS)

        # assigned: the one member of the east team who is neither gone nor away
        customer = await wait_events(kafka, topics, "customer.assigned", 1)
        channel = await wait_events(kafka, topics, "channel.assigned", 1)
        assert [(e["data"]["owner_id"], e["data"]["reason"]) for e in customer + channel] == [
            ("S-2", "unowned"),
            ("S-2", "unowned"),
        ]

        # 30 days without a touch: a revisit task for the A-tier customer's owner
        clock.now = datetime(2026, 4, 1, 10, 30, tzinfo=UTC)
        (created,) = await wait_events(kafka, topics, "task.created", 1)
        task = created["data"]
        assert (task["about"], task["owner_id"], task["rule"], task["team"]) == (
            "customer:C-1",
            "S-2",
            "revisit",
            "east",
        )
        assert task["due_at"] == "2026-04-04T10:00:00Z"
        # its reminder is planned when rules reads the task back: before the clock moves on
        await wait_consumed(kafka, settings.consumer_group, [topics.events])

        # not done: overdue, then one level up a day later, two levels up two days after that
        clock.now = datetime(2026, 4, 4, 10, 30, tzinfo=UTC)
        await wait_events(kafka, topics, "task.overdue", 1)
        clock.now = datetime(2026, 4, 5, 10, 30, tzinfo=UTC)
        await wait_events(kafka, topics, "task.escalated", 1)
        clock.now = datetime(2026, 4, 7, 10, 30, tzinfo=UTC)
        escalated = await wait_events(kafka, topics, "task.escalated", 2)
        assert [(e["data"]["level"], e["data"]["escalated_to"]) for e in escalated] == [
            (1, "M-1"),
            (2, "D-1"),
        ]

        # completed (as the notifier's API publishes it): the third level never comes
        done = event(
            "done-1",
            "task.completed",
            about="customer:C-1",
            task_id=task["task_id"],
            completed_by="S-2",
            completed_at="2026-04-08T09:00:00Z",
        )
        await publish_events(kafka, topics.events, [done])
        await wait_consumed(kafka, settings.consumer_group, [topics.events])
        mongo = make_client(mongo_settings, "test")
        try:
            timers = MongoTimerStore(mongo[f"people_{tag}"]["timers"])
            left = [t.name for t in await timers.pending("customer:C-1")]
        finally:
            await mongo.close()
        assert not [name for name in left if name.startswith(task["task_id"])]
        clock.now = datetime(2026, 4, 12, tzinfo=UTC)  # when level 3 would have been due
        await eventually(lambda: last_tick() >= clock.now.timestamp(), 30)
        await publish_events(
            kafka,
            topics.events,
            [
                event(
                    "mark-1",
                    "channel.interaction",
                    channel_id="CH-1",
                    kind="call",
                    occurred_at="2026-04-11T00:00:00Z",
                )
            ],
        )
        await wait_consumed(kafka, settings.consumer_group, [topics.events])
        assert len(await events_of(kafka, topics, "task.escalated")) == 2
        actions = parsed(await read_topic(kafka, topics.actions, expect=0, timeout=30, settle=0))
        chased = [
            (a["template"], a["recipient"]["id"]) for a in actions if a["rule"] == "task-escalation"
        ]
        assert chased == [
            ("task_reminder", "S-2"),
            ("task_overdue", "S-2"),
            ("task_escalated", "M-1"),
            ("task_escalated", "D-1"),
        ]
    before = await everything(kafka, topics)

    # analytics counts each step, and the same again after a replay into its database
    database = f"people_an_{tag}"
    mongo = make_client(mongo_settings, "test")
    try:
        buckets = mongo[database]["analytics_buckets"]
        async with analytics(kafka, mongo_settings, topics, database, f"an-{tag}"):
            await consumed(kafka, topics, f"an-{tag}")
        counted = await counters(buckets)
        steps = {k: counted.get(k, 0) for k in STEPS}
        assert steps == STEPS
        by_team = await counters(buckets, "team")
        assert by_team["tasks.created"] == 1  # the revisit task, made for the east team

        # replay the whole events topic into the existing databases: nothing new is decided,
        # nothing is counted again
        replay = settings.model_copy(update={"consumer_group": f"rules-{tag}-replay"})
        async with running(replay, clock):
            await wait_consumed(kafka, replay.consumer_group, [topics.events])
        assert await everything(kafka, topics) == before
        async with analytics(kafka, mongo_settings, topics, database, f"an-{tag}-replay"):
            await consumed(kafka, topics, f"an-{tag}-replay")
        assert await counters(buckets) == counted
    finally:
        await mongo.close()
