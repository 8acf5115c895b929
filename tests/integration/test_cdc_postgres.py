"""Change data capture for real: a CRM's rows in PostgreSQL, Debezium's PostgreSQL connector in
a Kafka Connect worker (deploy/local/cdc.py), ingest mapping the change events with the shipped
``services/ingest/mappings/example-crm-postgres.yaml``, and rules planning the renewal reminders.

Connect is restarted in the middle (changes made while it is down arrive when it is back), and
so is ingest (changes made while it is down are mapped when it is back): every change becomes
its event on ``upkeep.events.v1`` exactly once.

The first run on a machine installs Debian's PostgreSQL (as root) and resolves Connect's and
Debezium's jars into ``.cache/`` with Maven, hence this test's longer timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from deploy.local.cdc import CRM_SCHEMA, TOPICS, CdcStack
from deploy.local.stack import LocalStack
from services.ingest.settings import MAPPINGS_DIR
from services.rules.service import build as build_rules
from services.rules.settings import RulesSettings
from shared.events.envelope import CanonicalEvent
from shared.mongo import make_client
from shared.settings import KafkaSettings, MongoSettings, TopicSettings
from tests.integration.ingest_fixtures import ingest_settings, running_ingest, wait_assigned
from tests.kafka_helpers import read_topic, wait_consumed
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

# Connect and ingest both running; the customers first, as a CRM has them before their
# contracts (each table is a topic of its own: there is no order between them)
CUSTOMERS = """
INSERT INTO customers VALUES
    (1, 'Wang Fang', 'Asia/Shanghai', 'zh-CN', 'Wang.Fang@Example.CN', NULL, 'sales-1',
     '1990-02-28'),
    (2, 'Anna Berger', 'Europe/Berlin', 'de-DE', NULL, NULL, 'sales-2', NULL);
"""
FIRST = """
INSERT INTO contracts VALUES
    (10, 1, '2026-01-01', '2026-12-31', 1200.00, 'CNY', 'signed', false, '2025-12-20 08:30'),
    (11, 2, '2026-02-01', '2027-01-31', 800.50, 'EUR', 'draft', true, '2025-12-21 10:00');
INSERT INTO orders VALUES (100, 1, 99.90, 'CNY', '2025-12-22 12:00');
"""
# while Connect is down
WHILE_CONNECT_DOWN = """
UPDATE contracts SET status = 'running', updated_at = '2026-01-02 09:00' WHERE id = 11;
INSERT INTO customers VALUES (3, 'Li Na', NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO contracts VALUES
    (12, 3, '2025-06-01', '2026-05-31', 300.00, 'CNY', 'running', false, '2026-01-02 10:00');
UPDATE orders SET amount = 89.90 WHERE id = 100;  -- a changed order is no new order: nothing
"""
# while ingest is down
WHILE_INGEST_DOWN = """
DELETE FROM contracts WHERE id = 12;
INSERT INTO orders VALUES (101, 2, 45.00, 'EUR', '2026-01-03 18:15');
"""

CUSTOMER, CONTRACT = "upkeep.customer.upserted.v1", "upkeep.contract.upserted.v1"
CANCELLED, INTERACTION = "upkeep.contract.cancelled.v1", "upkeep.customer.interaction.v1"


Expected = tuple[str, str, dict[str, Any]]  # type, subject, the data fields compared
COMPARED = {
    CUSTOMER: ("customer_id", "name", "timezone", "locale", "email", "birthday", "owner_id"),
    CONTRACT: (
        "contract_id",
        "customer_id",
        "start_date",
        "end_date",
        "value",
        "currency",
        "status",
        "auto_renew",
        "updated_at",
    ),
    CANCELLED: ("contract_id", "customer_id"),
    INTERACTION: ("interaction_id", "customer_id", "kind", "amount", "currency", "occurred_at"),
}


def customer(n: int, name: str, tz: str, locale: str, **more: str) -> Expected:
    data = {"customer_id": f"crm-{n}", "name": name, "timezone": tz, "locale": locale, **more}
    return CUSTOMER, f"customer:crm-{n}", data


def contract(n: int, owner: int, dates: str, amount: str, status: str, at: str) -> Expected:
    """``amount`` is "<value> <currency>", ``dates`` "<start> <end>"; auto-renewing when the
    status ends with "+"."""
    (start, end), (value, currency) = dates.split(), amount.split()
    data: dict[str, Any] = {"contract_id": f"crm-{n}", "customer_id": f"crm-{owner}"}
    data |= {"start_date": start}
    data |= {"end_date": end, "value": value, "currency": currency, "updated_at": at}
    data |= {"status": status.rstrip("+"), "auto_renew": status.endswith("+")}
    return CONTRACT, f"customer:crm-{owner}", data


def order(n: int, owner: int, amount: str, at: str) -> Expected:
    value, currency = amount.split()
    data = {"interaction_id": f"crm-{n}", "customer_id": f"crm-{owner}", "kind": "order"}
    data |= {"amount": value, "currency": currency, "occurred_at": at}
    return INTERACTION, f"customer:crm-{owner}", data


WANG = {"birthday": "1990-02-28", "owner_id": "crm-sales-1"}
EXPECTED_FIRST = [
    # the email as ingest normalises it (its domain); a DATE (days since 1970) as a date
    customer(1, "Wang Fang", "Asia/Shanghai", "zh-CN", email="Wang.Fang@example.cn", **WANG),
    customer(2, "Anna Berger", "Europe/Berlin", "de-DE", owner_id="crm-sales-2"),
    # a NUMERIC as text, a TIMESTAMP (epoch microseconds) as UTC; the lookup: signed -> active
    contract(10, 1, "2026-01-01 2026-12-31", "1200.00 CNY", "active", "2025-12-20T08:30:00Z"),
    contract(11, 2, "2026-02-01 2027-01-31", "800.50 EUR", "pending+", "2025-12-21T10:00:00Z"),
    order(100, 1, "99.90 CNY", "2025-12-22T12:00:00Z"),
]
EXPECTED_AFTER_CONNECT_RESTART = [
    contract(11, 2, "2026-02-01 2027-01-31", "800.50 EUR", "active+", "2026-01-02T09:00:00Z"),
    customer(3, "Li Na", "Asia/Shanghai", "zh-CN"),  # the mapping's defaults
    contract(12, 3, "2025-06-01 2026-05-31", "300.00 CNY", "active", "2026-01-02T10:00:00Z"),
]
EXPECTED_AFTER_INGEST_RESTART = [
    (CANCELLED, "customer:crm-3", {"contract_id": "crm-12", "customer_id": "crm-3"}),
    order(101, 2, "45.00 EUR", "2026-01-03T18:15:00Z"),
]


def seen(event: CanonicalEvent) -> Expected:
    """The event as the expectations write it."""
    compared = COMPARED[event.type]
    return event.type, event.subject, {k: v for k, v in event.data.items() if k in compared}


def events_of(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[CanonicalEvent]:
    return [CanonicalEvent.from_json(r.value) for r in records]


def ordered(items: Sequence[Expected]) -> list[bytes]:
    return sorted(orjson.dumps(item, option=orjson.OPT_SORT_KEYS) for item in items)


async def _delete_topics(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(list(TOPICS))
    finally:
        await admin.close()


@pytest.fixture(scope="module")
async def cdc(stack: LocalStack) -> AsyncIterator[CdcStack]:
    """PostgreSQL with the CRM's (empty) tables and Connect streaming them, in the session's
    state directory; afterwards the CRM's topics are deleted (the broker is the session's)."""
    # the worker stores its offsets only when it stops gracefully: killed, it re-sends
    found = CdcStack(
        stack.config.state_dir,
        stack.kafka_node.bootstrap,
        cache_dir=stack.config.cache_dir,
        offset_flush_ms=600_000,
    )
    await asyncio.to_thread(found.prepare)  # the first time on a machine: apt-get and Maven
    try:
        await asyncio.to_thread(found.start_postgres)
        await asyncio.to_thread(found.sql, CRM_SCHEMA)
        await asyncio.to_thread(found.start_connect)
        yield found
    finally:
        await asyncio.to_thread(found.stop)
        with contextlib.suppress(KafkaError):
            await _delete_topics(stack.kafka_node.bootstrap)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_crm_changes_become_events_once_across_restarts_and_plan_renewals(
    cdc: CdcStack,
    kafka_settings: KafkaSettings,
    mongo_settings: MongoSettings,
    topics: TopicSettings,
) -> None:
    settings = ingest_settings(kafka_settings, mongo_settings, topics, mappings_dir=MAPPINGS_DIR)

    async def changes(topic: str) -> list[dict[str, Any]]:
        raw = await read_topic(kafka_settings, topic, expect=0, timeout=10, settle=0)
        return [orjson.loads(r.value) for r in raw if r.value]  # tombstones aside

    async def contract_12_created_twice() -> bool:
        found = await changes(TOPICS[1])
        return [c["after"]["id"] for c in found if c["op"] == "c"].count(12) == 2

    async def deleted() -> bool:
        return any(c["op"] == "d" for c in await changes(TOPICS[1]))

    async def events(expect: int, settle: float = 0) -> list[CanonicalEvent]:
        found = await read_topic(kafka_settings, topics.events, expect=expect, settle=settle)
        return events_of(found)

    async with running_ingest(settings):
        await asyncio.to_thread(cdc.sql, CUSTOMERS)
        await events(2)
        await asyncio.to_thread(cdc.sql, FIRST)
        first = await events(len(EXPECTED_FIRST))
        assert ordered([seen(e) for e in first]) == ordered(EXPECTED_FIRST)

        assert await asyncio.to_thread(cdc.stop_connect)
        await asyncio.to_thread(cdc.sql, WHILE_CONNECT_DOWN)
        await asyncio.to_thread(cdc.start_connect)  # resumes from its stored offsets
        so_far = EXPECTED_FIRST + EXPECTED_AFTER_CONNECT_RESTART
        second = await events(len(so_far))
        assert ordered([seen(e) for e in second]) == ordered(so_far)

        # killed, Connect has not stored how far it got: it sends those changes again
        await asyncio.to_thread(cdc.managed("connect").kill)
        await asyncio.to_thread(cdc.start_connect)
        await eventually(contract_12_created_twice, 60, what="Connect re-sent nothing")

    # ingest is down: Connect goes on writing the changes; ingest maps them when it is back
    await asyncio.to_thread(cdc.sql, WHILE_INGEST_DOWN)
    await eventually(deleted, 60, what="Connect wrote no delete")
    async with running_ingest(settings):
        expected = EXPECTED_FIRST + EXPECTED_AFTER_CONNECT_RESTART + EXPECTED_AFTER_INGEST_RESTART
        final = await events(len(expected), settle=3)  # then 3 s more for any duplicate
    assert ordered([seen(e) for e in final]) == ordered(expected)
    assert len({e.id for e in final}) == len(final)
    contract_11 = [e.data["status"] for e in final if e.data.get("contract_id") == "crm-11"]
    assert contract_11 == ["pending", "active"]  # in the CRM's order
    (cancel,) = (e for e in final if e.type == CANCELLED)
    committed = datetime.fromisoformat(cancel.data["cancelled_at"])
    assert abs(committed - datetime.now(UTC)) < timedelta(minutes=10)  # when it was deleted

    await _renewals_are_planned(kafka_settings, mongo_settings, topics)


async def _renewals_are_planned(
    kafka: KafkaSettings, mongo: MongoSettings, topics: TopicSettings
) -> None:
    """Rules reads the mapped events: the renewal reminders of the active contracts are
    planned, the first comes due as an action, and the deleted contract reminds nobody."""
    tag = uuid.uuid4().hex[:8]
    settings = RulesSettings(
        kafka=kafka,
        mongo=mongo.model_copy(update={"database": f"rules_cdc_{tag}"}),
        topics=topics,
        consumer_group=f"rules-cdc-{tag}",
        instance_id=tag,
        batch_timeout_ms=50,
        tick_interval_s=0.2,
    )
    clock = Clock(datetime(2026, 1, 5, tzinfo=UTC))
    client = make_client(settings.mongo, "test")
    timers = client[settings.mongo.database]["timers"]

    async def renewal_timers(subject: str) -> dict[str, datetime]:
        found = timers.find({"rule": "renewal", "subject": subject})
        return {d["name"]: d["due_at"] async for d in found}

    async def renewal_actions() -> list[str]:
        records = await read_topic(kafka, topics.actions, expect=0, timeout=10, settle=0)
        keys = [orjson.loads(r.value)["key"] for r in records]
        return [k for k in keys if k.startswith("renewal:")]

    try:
        async with build_rules(settings, clock) as service:
            tasks = [asyncio.create_task(loop.run()) for loop in service.loops]
            try:
                for loop in service.loops:
                    await wait_assigned(loop)
                await wait_consumed(kafka, settings.group_id, [topics.events])
                # at 09:00 in the customer's time zone: Shanghai, Berlin
                for subject, term, first_due in (
                    ("customer:crm-1", "crm-10:2026-12-31", datetime(2026, 11, 1, 1, tzinfo=UTC)),
                    ("customer:crm-2", "crm-11:2027-01-31", datetime(2026, 12, 2, 8, tzinfo=UTC)),
                ):
                    planned = await renewal_timers(subject)
                    steps = ("60d", "30d", "7d", "1d", "overdue")
                    assert set(planned) == {f"{term}:{step}" for step in steps}
                    assert planned[f"{term}:60d"] == first_due
                # 1 November, 09:00 in Shanghai: 60 days before crm-10 ends, and every
                # reminder of crm-12 (deleted in the CRM, it ended on 31 May) would be past
                clock.now = datetime(2026, 11, 1, 2, tzinfo=UTC)
                await eventually(renewal_actions, 60, what="no renewal reminder")
                records = await read_topic(kafka, topics.actions, expect=1, settle=2)
            finally:
                for loop in service.loops:
                    loop.stop()
                await asyncio.gather(*tasks)
    finally:
        await client.close()
    keys = [orjson.loads(r.value)["key"] for r in records]
    assert [k for k in keys if k.startswith("renewal:")] == ["renewal:crm-10:2026-12-31:60d"]
