"""The rules service through the real broker and MongoDB-wire server, with a chosen clock."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pytest

from services.rules.churn.bgnbd import BgNbdParams, simulate
from services.rules.churn.jobs import load_model, refit
from services.rules.churn.rule import ChurnConfig, ChurnModel, ChurnRisk
from services.rules.replay import replay
from services.rules.sdk import RuleContext, Timer
from services.rules.service import build
from services.rules.settings import RulesSettings
from services.rules.state import CustomerState, SubjectState
from services.rules.store import MongoSubjectStore, MongoTimerStore
from shared.events.envelope import CanonicalEvent
from shared.events.types import resolve_type
from shared.mongo import make_client
from shared.settings import KafkaSettings, MongoSettings, TopicSettings
from tests.integration.ingest_fixtures import wait_assigned
from tests.kafka_helpers import publish_events, read_topic, wait_consumed
from tests.waiting import eventually

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def event(n: int, type_name: str, **data: Any) -> CanonicalEvent:
    payload = resolve_type(type_name).model_validate(data)  # type: ignore[union-attr]
    return CanonicalEvent.build(
        event_id=f"e-{n}",
        source="test",
        payload=payload,
        time=datetime(2026, 1, 1, tzinfo=UTC),
        source_offset="Z",
    )


HISTORY = [
    event(
        1,
        "staff.upserted",
        staff_id="S-1",
        name="Owner",
        timezone="Asia/Shanghai",
        manager_id="S-2",
    ),
    event(
        2,
        "customer.upserted",
        customer_id="C-1",
        name="Acme",
        timezone="Asia/Shanghai",
        owner_id="S-1",
    ),
    event(
        3,
        "contract.upserted",
        contract_id="K-1",
        customer_id="C-1",
        start_date="2025-06-01",
        end_date="2026-05-31",
    ),
]


def settings_for(
    kafka: KafkaSettings,
    mongo: MongoSettings,
    topics: TopicSettings,
    database: str,
    group: str,
    instance: str,
) -> RulesSettings:
    return RulesSettings(
        kafka=kafka,
        mongo=mongo.model_copy(update={"database": database}),
        topics=topics,
        consumer_group=group,
        instance_id=instance,
        batch_timeout_ms=50,
        tick_interval_s=0.2,
    )


@asynccontextmanager
async def running(settings: RulesSettings, clock: Clock) -> AsyncIterator[None]:
    async with build(settings, clock) as service:
        tasks = [asyncio.create_task(loop.run()) for loop in service.loops]
        try:
            for loop in service.loops:
                await wait_assigned(loop)
            yield
        finally:
            for loop in service.loops:
                loop.stop()
            await asyncio.gather(*tasks)


@pytest.fixture
def names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"rules_{tag}", f"rules-{tag}"


async def read_keys(kafka: KafkaSettings, topic: str, expect: int) -> list[str]:
    records = await read_topic(kafka, topic, expect=expect, timeout=30, settle=2)
    return [orjson.loads(r.value)["key"] for r in records]


async def test_timers_survive_a_restart_and_fire_once(
    kafka_settings: KafkaSettings,
    mongo_settings: MongoSettings,
    topics: TopicSettings,
    names: tuple[str, str],
) -> None:
    db, group = names
    clock = Clock(datetime(2026, 1, 1, tzinfo=UTC))
    settings = settings_for(kafka_settings, mongo_settings, topics, db, group, "a")
    async with running(settings, clock):
        await publish_events(kafka_settings, topics.events, HISTORY)
        await wait_consumed(kafka_settings, group, [topics.events])  # state and timers stored
    # nothing due yet: nothing fired
    assert await read_topic(kafka_settings, topics.actions, expect=0, timeout=30, settle=0.5) == []

    clock.now = datetime(2026, 5, 2, tzinfo=UTC)  # past the 60d and 30d reminders
    async with running(settings, clock):  # a new process: timers come from MongoDB
        keys = await read_keys(kafka_settings, topics.actions, expect=2)
        clock.now = datetime(2026, 5, 25, 2, tzinfo=UTC)  # past the 7d reminder
        keys = await read_keys(kafka_settings, topics.actions, expect=3)
    assert keys == [
        "renewal:K-1:2026-05-31:60d",
        "renewal:K-1:2026-05-31:30d",
        "renewal:K-1:2026-05-31:7d",
    ]


async def test_a_renewal_cancels_the_pending_reminders(
    kafka_settings: KafkaSettings,
    mongo_settings: MongoSettings,
    topics: TopicSettings,
    names: tuple[str, str],
) -> None:
    db, group = names
    clock = Clock(datetime(2026, 3, 1, tzinfo=UTC))
    async with running(settings_for(kafka_settings, mongo_settings, topics, db, group, "a"), clock):
        await publish_events(kafka_settings, topics.events, HISTORY)
        await wait_consumed(kafka_settings, group, [topics.events])
        clock.now = datetime(2026, 4, 15, tzinfo=UTC)  # the 60d reminder comes due
        first = await read_keys(kafka_settings, topics.actions, expect=1)
        await publish_events(
            kafka_settings,
            topics.events,
            [
                event(
                    4,
                    "contract.renewed",
                    contract_id="K-1",
                    customer_id="C-1",
                    renewed_at="2026-04-20T00:00:00Z",
                    new_end_date="2027-05-31",
                ),
                # a marker: its 60d reminder (16 June) comes due with the old term's ones
                event(
                    5,
                    "contract.upserted",
                    contract_id="K-2",
                    customer_id="C-1",
                    start_date="2025-08-16",
                    end_date="2026-08-15",
                ),
            ],
        )
        await wait_consumed(kafka_settings, group, [topics.events])
        clock.now = datetime(2026, 6, 30, tzinfo=UTC)  # the old term's reminders would be due
        # the marker fired: a tick ran with the old term's reminders due (they are earlier)
        after = await read_keys(kafka_settings, topics.actions, expect=2)
    assert first == ["renewal:K-1:2026-05-31:60d"]
    assert after == ["renewal:K-1:2026-05-31:60d", "renewal:K-2:2026-08-15:60d"]


async def test_two_replicas_and_a_rebalance_fire_each_timer_once(
    kafka_settings: KafkaSettings,
    mongo_settings: MongoSettings,
    topics: TopicSettings,
    names: tuple[str, str],
) -> None:
    db, group = names
    clock = Clock(datetime(2026, 1, 1, tzinfo=UTC))
    customers = 40
    history = [event(1, "staff.upserted", staff_id="S-1", name="O", timezone="UTC")]
    for n in range(customers):
        history.append(
            event(
                100 + n,
                "customer.upserted",
                customer_id=f"C-{n}",
                name="X",
                timezone="Europe/Berlin",
                owner_id="S-1",
            )
        )
        history.append(
            event(
                500 + n,
                "contract.upserted",
                contract_id=f"K-{n}",
                customer_id=f"C-{n}",
                start_date="2025-06-01",
                end_date="2026-03-31",
            )
        )
    a = settings_for(kafka_settings, mongo_settings, topics, db, group, "a")
    b = settings_for(kafka_settings, mongo_settings, topics, db, group, "b")
    async with running(a, clock):
        await publish_events(kafka_settings, topics.events, history)
        await wait_consumed(kafka_settings, group, [topics.events])
        async with running(b, clock):  # b joins: partitions move while timers come due
            clock.now = datetime(2026, 3, 5, tzinfo=UTC)  # 60d and 30d reminders of all
            await asyncio.sleep(1)
        # b has left: a owns everything again
        clock.now = datetime(2026, 3, 31, tzinfo=UTC)  # and the 7d and 1d reminders
        keys = await read_keys(kafka_settings, topics.actions, expect=4 * customers)
    assert len(keys) == len(set(keys)) == 4 * customers
    assert {k.rsplit(":", 1)[1] for k in keys} == {"60d", "30d", "7d", "1d"}


async def test_a_crash_between_commit_and_removal_does_not_fire_a_timer_again(
    kafka_settings: KafkaSettings,
    mongo_settings: MongoSettings,
    topics: TopicSettings,
    names: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first process commits the reminders and dies before deleting the fired timers (its
    deletion hangs and the loop is cancelled there); the next process must not fire them again."""
    db, group = names
    clock = Clock(datetime(2026, 1, 1, tzinfo=UTC))
    settings = settings_for(kafka_settings, mongo_settings, topics, db, group, "a")
    remove_fired = MongoTimerStore.remove_fired

    async def die_before_removal(self: MongoTimerStore, fired: Sequence[Timer]) -> None:
        if fired:
            await asyncio.Event().wait()

    monkeypatch.setattr(MongoTimerStore, "remove_fired", die_before_removal)
    async with build(settings, clock) as service:
        (loop,) = service.loops
        task = asyncio.create_task(loop.run())
        await wait_assigned(loop)
        await publish_events(kafka_settings, topics.events, HISTORY)
        await wait_consumed(kafka_settings, group, [topics.events])
        clock.now = datetime(2026, 5, 2, tzinfo=UTC)  # the 60d and 30d reminders come due
        first = await read_keys(kafka_settings, topics.actions, expect=2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    client = make_client(mongo_settings, "test")
    timers = client[db]["timers"]
    fired = {"rule": "renewal", "due_at": {"$lte": clock.now}}  # other rules' timers aside
    left = {d["name"] async for d in timers.find(fired)}
    assert len(left) == 2  # the "crash" left both fired timers behind

    monkeypatch.setattr(MongoTimerStore, "remove_fired", remove_fired)
    async with running(settings_for(kafka_settings, mongo_settings, topics, db, group, "b"), clock):
        # b's ticks find the fired timers in the tick log and remove them (without firing)
        async def removed() -> bool:
            return await timers.count_documents(fired) == 0

        await eventually(removed, what="the timers fired before the crash are still stored")
        keys = await read_keys(kafka_settings, topics.actions, expect=2)
        clock.now = datetime(2026, 5, 25, 2, tzinfo=UTC)  # the 7d reminder still fires
        keys = await read_keys(kafka_settings, topics.actions, expect=3)
    await client.close()
    assert first == keys[:2] == ["renewal:K-1:2026-05-31:60d", "renewal:K-1:2026-05-31:30d"]
    assert keys[2:] == ["renewal:K-1:2026-05-31:7d"]


async def test_replay_dry_run_prints_what_would_have_fired_and_publishes_nothing(
    kafka_settings: KafkaSettings,
    mongo_settings: MongoSettings,
    topics: TopicSettings,
    names: tuple[str, str],
) -> None:
    db, group = names
    await publish_events(kafka_settings, topics.events, HISTORY)
    settings = settings_for(kafka_settings, mongo_settings, topics, db, group, "replay")
    out = io.StringIO()
    count = await replay(settings, 0, datetime(2026, 7, 1, tzinfo=UTC), out)
    keys = [json.loads(line)["key"] for line in out.getvalue().splitlines()]
    assert count == len(keys) == 5
    assert keys == [f"renewal:K-1:2026-05-31:{s}" for s in ("60d", "30d", "7d", "1d", "overdue")]
    assert await read_topic(kafka_settings, topics.actions, expect=0, timeout=30, settle=0.5) == []


async def test_the_churn_model_is_refitted_from_stored_customers(
    mongo_settings: MongoSettings, names: tuple[str, str]
) -> None:
    db_name, _ = names
    client = make_client(mongo_settings, "test")
    db = client[db_name]
    store = MongoSubjectStore(db["subjects"])
    x, t_x, t = simulate(BgNbdParams(0.8, 20.0, 0.6, 3.0), 300, 200.0, np.random.default_rng(1))
    now = datetime(2026, 11, 1, tzinfo=UTC)
    states = []
    for n, (xi, txi, ti) in enumerate(zip(x, t_x, t, strict=True)):
        first = now - timedelta(days=float(ti))
        states.append(
            SubjectState(
                id=f"customer:C-{n}",
                customer=CustomerState(
                    customer_id=f"C-{n}",
                    orders=int(xi) + 1,
                    first_order_at=first,
                    last_order_at=first + timedelta(days=float(txi)),
                ),
            )
        )
    await store.save(states)
    model, config = ChurnModel(), ChurnConfig(min_customers=50)
    assert await refit(db["subjects"], db["churn_model"], model, config, now)
    assert model.params is not None
    assert model.customers == 300
    reloaded = ChurnModel()
    await load_model(db["churn_model"], reloaded)
    assert reloaded.params == model.params
    too_few = ChurnConfig(min_customers=1000)
    assert not await refit(db["subjects"], db["churn_model"], ChurnModel(), too_few, now)


async def test_the_weekly_list_groups_at_risk_customers_by_owner(
    mongo_settings: MongoSettings, names: tuple[str, str]
) -> None:
    db_name, _ = names
    client = make_client(mongo_settings, "test")
    subjects = client[db_name]["subjects"]
    rows = [
        ("C-1", "S-1", True, 0.9),
        ("C-2", "S-1", True, 0.75),
        ("C-3", "S-2", True, 0.8),
        ("C-4", "S-2", False, 0.2),
    ]
    await MongoSubjectStore(subjects).save(
        SubjectState(
            id=f"customer:{c}",
            customer=CustomerState(customer_id=c, owner_id=owner, at_risk=flag, churn_risk=risk),
        )
        for c, owner, flag, risk in rows
    )
    slot = datetime(2026, 11, 23, 1, tzinfo=UTC)
    rule = ChurnRisk()
    (job,) = rule.schedules
    # what the engine hands the job: the subjects its ``where`` asks for, from MongoDB
    found = await MongoSubjectStore(subjects).find(job.kind, job.where)
    assert sorted(s.id for s in found) == ["customer:C-1", "customer:C-2", "customer:C-3"]
    actions = rule.on_schedule(job, slot, found, RuleContext(now=slot))
    assert [(a.key, a.data["count"]) for a in actions] == [
        ("churn:weekly:S-1:2026-W48", 2),
        ("churn:weekly:S-2:2026-W48", 1),
    ]
    assert [c["customer_id"] for c in actions[0].data["customers"]] == ["C-1", "C-2"]
