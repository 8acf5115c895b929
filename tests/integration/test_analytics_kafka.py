"""Analytics through the real broker and MongoDB-wire server: counters equal the ground truth
after redeliveries, a full replay into the existing database, and a crash in the middle of a
batch's writes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from prometheus_client import generate_latest
from pymongo.asynchronous.collection import AsyncCollection

from services.analytics.aggregates import Aggregates, totals
from services.analytics.gauges import refresh
from services.analytics.service import build
from services.analytics.settings import AnalyticsSettings
from shared.events.envelope import CanonicalEvent
from shared.events.types import resolve_type
from shared.mongo import make_client
from shared.runtime import Service
from shared.settings import KafkaSettings, MongoSettings, TopicSettings
from tests.integration.analytics_access import ACCESS, HEADERS
from tests.integration.ingest_fixtures import wait_assigned
from tests.kafka_helpers import produce, publish_events, wait_consumed

pytestmark = pytest.mark.integration

DAY = datetime(2026, 11, 2, 10, tzinfo=UTC)
CUSTOMERS, ORDERS, RENEWED, LOST = 40, 90, 7, 3
CHANNEL_ORDERS = 6  # all from CH-1; CH-2 is flagged by the channel-health rule


def event(n: str, type_name: str, at: datetime = DAY, **data: Any) -> CanonicalEvent:
    payload = resolve_type(type_name).model_validate(data)  # type: ignore[union-attr]
    return CanonicalEvent.build(
        event_id=n, source="test", payload=payload, time=at, source_offset="Z"
    )


def scenario() -> tuple[list[CanonicalEvent], list[dict[str, Any]], list[dict[str, Any]]]:
    events = [
        event(
            f"c-{n}",
            "customer.upserted",
            customer_id=f"C-{n}",
            name=f"Customer {n}",
            timezone="UTC",
            owner_id=f"S-{n % 2}",
            channel_id=f"CH-{n % 2 + 1}",
        )
        for n in range(CUSTOMERS)
    ]
    events += [
        event(
            f"ch-{n}",
            "channel.upserted",
            channel_id=f"CH-{n}",
            name=f"Dealer {n}",
            timezone="UTC",
            manager_id=f"S-{n - 1}",
        )
        for n in (1, 2)
    ]
    events += [
        event(
            f"co-{n}",
            "channel.order",
            DAY + timedelta(days=n % 2),  # spread over two days
            order_id=f"PO-{n}",
            channel_id="CH-1",
            occurred_at=(DAY + timedelta(days=n % 2)).isoformat(),
            amount="100.00",
            currency="EUR",
        )
        for n in range(CHANNEL_ORDERS)
    ]
    events += [
        event(
            f"o-{n}",
            "customer.interaction",
            DAY + timedelta(hours=n % 5),
            interaction_id=f"O-{n}",
            customer_id=f"C-{n % CUSTOMERS}",
            kind="order",
            amount="12.50",
            currency="EUR",
            occurred_at=(DAY + timedelta(hours=n % 5)).isoformat(),
        )
        for n in range(ORDERS)
    ]
    events += [
        event(
            f"r-{n}",
            "contract.renewed",
            contract_id=f"K-{n}",
            customer_id=f"C-{n}",
            # K-6 renewed an hour before its reminders were sent: not a conversion
            renewed_at=(DAY - timedelta(hours=1) if n == 6 else DAY).isoformat(),
            new_end_date="2027-11-30",
        )
        for n in range(RENEWED)
    ]
    events += [
        event(
            f"x-{n}",
            "contract.cancelled",
            contract_id=f"K-{100 + n}",
            customer_id=f"C-{n}",
            cancelled_at=DAY.isoformat(),
        )
        for n in range(LOST)
    ]
    events += [
        event(
            f"risk-{n}",
            "customer.churn_risk_changed",
            customer_id=f"C-{n % 3}",
            at_risk=n < 3,
            risk=0.8 if n < 3 else 0.4,
            changed_at=(DAY + timedelta(minutes=n)).isoformat(),
        )
        for n in range(4)  # three enter the risk, one of them recovers
    ]
    actions, deliveries = [], []
    for n in range(10):  # ten renewal terms, two reminders each
        for offset in ("30d", "7d"):
            key = f"renewal:K-{n}:2026-11-30:{offset}"
            body = {
                "key": key,
                "rule": "renewal",
                "subject": f"customer:C-{n}",
                "kind": "email",
                "recipient": {"kind": "staff", "id": f"S-{n % 2}"},
                "template": "renewal_reminder",
                "locale": "en",
                "due_at": DAY.isoformat(),
                "priority": "transactional",
                "data": {},
                "context": {"owner": f"S-{n % 2}", "channel": f"CH-{n % 2 + 1}"},
                "created_at": DAY.isoformat(),
            }
            actions.append(body)
            outcome = "failed" if n == 9 else "sent"
            deliveries.append(delivery(body, "deferred", "quiet_hours"))
            deliveries.append(delivery(body, outcome, None if outcome == "sent" else "smtp_550"))
    actions.append(
        {
            "key": "channel-health:CH-2:inactive:2026-11-02",
            "rule": "channel-health",
            "subject": "channel:CH-2",
            "kind": "chat",
            "recipient": {"kind": "staff", "id": "S-1"},
            "template": "channel_inactive",
            "locale": "en",
            "due_at": DAY.isoformat(),
            "priority": "transactional",
            "data": {},
            "context": {"owner": "S-1", "channel": "CH-2"},
            "created_at": DAY.isoformat(),
        }
    )
    return events, actions, deliveries


def delivery(action: dict[str, Any], outcome: str, reason: str | None) -> dict[str, Any]:
    return {
        "id": f"{action['key']}:{outcome}",
        "key": action["key"],
        "outcome": outcome,
        "reason": reason,
        "rule": action["rule"],
        "subject": action["subject"],
        "kind": action["kind"],
        "recipient": action["recipient"],
        "priority": action["priority"],
        "template": action["template"],
        "attempts": 1,
        "due_at": action["due_at"],
        "at": DAY.isoformat(),
        "context": action.get("context", {}),
    }


# the ground truth of the scenario, counted by hand
TRUTH = {
    "events.customer.upserted": CUSTOMERS,
    "events.customer.interaction": ORDERS,
    "events.contract.renewed": RENEWED,
    "events.channel.upserted": 2,
    "events.channel.order": CHANNEL_ORDERS,
    "channel_orders": CHANNEL_ORDERS,
    "channel_order_value.EUR": CHANNEL_ORDERS * 10000,
    "channels.flagged": 1,
    "actions.chat": 1,
    "events.contract.cancelled": LOST,
    "customers.new": CUSTOMERS,
    "orders": ORDERS,
    "order_value.EUR": ORDERS * 1250,
    "revenue.EUR": ORDERS * 1250 + CHANNEL_ORDERS * 10000,
    "customers.active.month": CUSTOMERS,  # every customer ordered that month, and that week
    "customers.active.week": CUSTOMERS,
    "renewals.renewed": RENEWED,
    "renewals.lost": LOST,
    "events.customer.churn_risk_changed": 4,
    "customers.at_risk": 3,
    "customers.recovered": 1,
    "actions": 21,
    "actions.email": 20,
    "renewals.due": 10,
    "renewals.reminded": 9,  # K-9's reminders failed
    "renewals.converted": 6,  # K-0..K-5 renewed after a reminder; K-6 before it
    "deliveries": 20,
    "deliveries.sent": 18,
    "deliveries.failed": 2,
    "touches.automated": 18,
    "touches.email": 18,
}


async def publish_all(kafka: KafkaSettings, topics: TopicSettings, *, twice: bool) -> None:
    events, actions, deliveries = scenario()
    for _ in range(2 if twice else 1):  # the second time: upstream republished everything
        await publish_events(kafka, topics.events, events)
        for a in actions:
            await produce(kafka, topics.actions, [a], key=a["subject"].encode())
        for d in deliveries:
            await produce(kafka, topics.deliveries, [d], key=d["subject"].encode())


@asynccontextmanager
async def analytics(
    kafka: KafkaSettings, mongo: MongoSettings, topics: TopicSettings, database: str, group: str
) -> AsyncIterator[Service]:
    settings = AnalyticsSettings(
        kafka=kafka,
        mongo=mongo.model_copy(update={"database": database}),
        topics=topics,
        consumer_group=group,
        instance_id=group,
        batch_timeout_ms=50,
        batch_max_records=37,  # many small batches: buckets touched by several of them
    )
    async with build(settings, ACCESS) as service:
        (loop,) = service.loops
        task = asyncio.create_task(loop.run())
        try:
            await wait_assigned(loop)
            yield service
        finally:
            loop.stop()
            await task


async def counters(buckets: AsyncCollection[dict[str, Any]], dim: str = "all") -> dict[str, int]:
    found: dict[str, int] = {}
    async for doc in buckets.find({"g": "day", "dim": dim}):
        for name, amount in doc.get("c", {}).items():
            key = name.replace("~", ".")
            found[key] = found.get(key, 0) + amount
    return found


async def consumed(kafka: KafkaSettings, topics: TopicSettings, group: str) -> None:
    """Analytics (consumer group ``group``) has handled everything published to its three
    topics so far: it commits a batch's offsets only after the batch's writes."""
    await wait_consumed(kafka, group, [topics.events, topics.actions, topics.deliveries])


async def test_counters_equal_the_ground_truth_after_duplicates_a_replay_and_a_crash(
    kafka_settings: KafkaSettings,
    mongo_settings: MongoSettings,
    topics: TopicSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tag = uuid.uuid4().hex[:8]
    database = f"analytics_{tag}"
    client = make_client(mongo_settings, "test")
    buckets = client[database]["analytics_buckets"]
    await publish_all(kafka_settings, topics, twice=True)

    # a crash in the middle of a batch's writes: the first bulk write applies half its
    # updates and fails; the batch is read again and recomputed
    from pymongo.asynchronous.collection import AsyncCollection as Collection

    real = Collection.bulk_write
    crashed: list[int] = []

    async def half_then_fail(self: Any, requests: Any, *args: Any, **kwargs: Any) -> Any:
        if self.name == "analytics_buckets" and not crashed and len(requests) > 3:
            crashed.append(len(requests))
            await real(self, requests[: len(requests) // 2], *args, **kwargs)
            raise ConnectionError("the server went away mid-batch")
        return await real(self, requests, *args, **kwargs)

    monkeypatch.setattr(Collection, "bulk_write", half_then_fail)
    async with analytics(kafka_settings, mongo_settings, topics, database, f"an-{tag}"):
        await consumed(kafka_settings, topics, f"an-{tag}")
    assert crashed, "the crash was not exercised"
    assert await counters(buckets) == TRUTH

    # a full replay of all three topics from offset 0 into the existing database
    async with analytics(kafka_settings, mongo_settings, topics, database, f"an-{tag}-replay"):
        await consumed(kafka_settings, topics, f"an-{tag}-replay")
    assert await counters(buckets) == TRUTH

    # by owner: the customers alternate between two owners
    by_owner = await counters(buckets, "owner")
    assert by_owner["customers.new"] == CUSTOMERS
    assert by_owner["orders"] == ORDERS
    # hour buckets add up to the day
    hours: dict[str, int] = {}
    async for doc in buckets.find({"g": "hour", "dim": "all"}):
        for name, amount in doc.get("c", {}).items():
            hours[name.replace("~", ".")] = hours.get(name.replace("~", "."), 0) + amount
    assert hours == TRUTH
    await client.close()


async def test_the_report_and_csv_for_a_known_scenario(
    kafka_settings: KafkaSettings, mongo_settings: MongoSettings, topics: TopicSettings
) -> None:
    tag = uuid.uuid4().hex[:8]
    database = f"analytics_{tag}"
    client = make_client(mongo_settings, "test")
    buckets = client[database]["analytics_buckets"]
    await publish_all(kafka_settings, topics, twice=False)
    async with analytics(kafka_settings, mongo_settings, topics, database, f"an-{tag}") as svc:
        await consumed(kafka_settings, topics, f"an-{tag}")
        assert await counters(buckets) == TRUTH
        transport = httpx.ASGITransport(app=svc.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://analytics", headers=HEADERS
        ) as http:
            window = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-03T00:00:00Z"}
            report = (await http.get("/v1/report", params=window)).json()
            csv_text = (await http.get("/v1/series.csv", params=window)).text
            rows = (await http.get("/v1/series", params={**window, "dim": "rule"})).json()
            # the pages show the last 31 days by default: ask for 31 days around the scenario
            month = {"from": "2026-10-26T00:00:00Z", "to": "2026-11-26T00:00:00Z"}
            pages = {}
            for path in ("/", "/?lang=zh", "/owners", "/rules", "/channels?lang=zh"):
                route, _, query = path.partition("?")
                pages[path] = await http.get(route, params={**month, **dict(parse_qsl(query))})
            weekly = await http.get(
                "/v1/series",
                params={
                    **window,
                    "to": "2026-11-09T00:00:00Z",
                    "granularity": "week",
                    "dim": "channel",
                },
            )
            monthly = await http.get("/v1/savings", params={**window, "dim": "owner"})
            at_risk = (await http.get("/at-risk")).text
    assert report["renewal_rate"] == 0.7  # 7 renewed of 10 terms due
    assert report["reminder_conversion"] == round(6 / 9, 4)
    assert report["churn_recoveries"] == 1
    assert report["recovery_rate"] == round(1 / 3, 4)
    assert report["delivery_success_rate"] == 0.9  # 18 sent, 2 failed
    assert report["automation_coverage"] == 1.0
    assert report["hours_saved"] == round(18 * 6 / 60, 2)
    assert report["money_saved"] == round(18 * 6 / 60 * 40, 2)
    header, line = csv_text.strip().splitlines()
    assert header.startswith("start,dimension,value,")
    assert line.startswith("2026-11-02T00:00:00+00:00,all,*,")
    assert dict(zip(header.split(","), line.split(","), strict=True))["orders"] == str(ORDERS)
    assert sorted((r["value"], r["counters"]["actions"]) for r in rows) == [
        ("channel-health", 1),
        ("renewal", 20),
    ]
    # the dashboard (server-rendered, no scripts): pages load with the data in both languages
    assert {path: answer.status_code for path, answer in pages.items()} == dict.fromkeys(pages, 200)
    assert "<svg" in pages["/"].text
    assert "Renewal rate" in pages["/"].text
    assert "续约率" in pages["/?lang=zh"].text
    assert "<script" not in pages["/"].text
    assert "S-0" in pages["/owners"].text
    assert "S-1" in pages["/owners"].text
    assert "renewal" in pages["/rules"].text
    assert "<td>C-1</td>" in at_risk
    assert "<td>C-2</td>" in at_risk
    assert "<td>C-0</td>" not in at_risk  # entered the risk, then recovered
    assert totals(rows)["deliveries.sent"] == 18
    # channel health over time: the week of Monday 2026-11-02, per channel
    by_channel = {r["value"]: r for r in weekly.json()}
    assert {r["start"] for r in by_channel.values()} == {"2026-11-02T00:00:00Z"}
    assert by_channel["CH-1"]["counters"]["channel_orders"] == CHANNEL_ORDERS
    assert by_channel["CH-2"]["counters"]["channels.flagged"] == 1
    assert "渠道健康度" in pages["/channels?lang=zh"].text
    assert "<td>CH-1</td><td>51</td>" in pages["/channels?lang=zh"].text  # 6 + its customers' 45
    assert "<td>CH-2</td><td>45 ⚠</td>" in pages["/channels?lang=zh"].text
    # manual work saved per owner in November: S-0 and S-1 each got 9 of the 18 e-mails
    assert [(m["value"], m["touches"]["email"], m["hours_saved"]) for m in monthly.json()] == [
        ("S-0", 10, 1.0),
        ("S-1", 8, 0.8),
    ]

    # the business gauges Prometheus scrapes
    aggregates = Aggregates(client[database]["analytics_facts"], buckets)
    await refresh(aggregates, "UTC", DAY + timedelta(days=2))  # Wednesday of that week
    metrics = generate_latest().decode()
    assert "upkeep_analytics_customers_at_risk 2.0" in metrics
    assert "upkeep_analytics_renewals_due_this_week 10.0" in metrics
    await client.close()


async def test_a_conversion_counts_once_whichever_side_arrives_first(
    kafka_settings: KafkaSettings, mongo_settings: MongoSettings, topics: TopicSettings
) -> None:
    """K-A: the renewal is consumed before the reminder's outcome; K-B: after it. Both convert,
    once each, also when everything is published again."""
    tag = uuid.uuid4().hex[:8]
    database = f"analytics_{tag}"
    client = make_client(mongo_settings, "test")
    buckets = client[database]["analytics_buckets"]

    def reminder(contract: str) -> dict[str, Any]:
        key = f"renewal:{contract}:2026-11-30:30d"
        action = {
            "key": key,
            "rule": "renewal",
            "subject": "customer:C-1",
            "kind": "email",
            "recipient": {"kind": "staff", "id": "S-1"},
            "template": "renewal_reminder",
            "locale": "en",
            "due_at": DAY.isoformat(),
            "priority": "transactional",
        }
        return delivery(action, "sent", None)

    def renewal(contract: str) -> CanonicalEvent:
        return event(
            f"renewed-{contract}",
            "contract.renewed",
            DAY + timedelta(days=3),
            contract_id=contract,
            customer_id="C-1",
            renewed_at=(DAY + timedelta(days=3)).isoformat(),
            new_end_date="2027-11-30",
        )

    async def send(*items: dict[str, Any] | CanonicalEvent) -> None:
        for item in items:
            if isinstance(item, CanonicalEvent):
                await publish_events(kafka_settings, topics.events, [item])
            else:
                await produce(kafka_settings, topics.deliveries, [item], key=b"customer:C-1")

    window = {"renewals.reminded", "renewals.converted", "renewals.renewed"}

    async def figures() -> dict[str, int]:
        return {k: v for k, v in (await counters(buckets)).items() if k in window}

    async with analytics(kafka_settings, mongo_settings, topics, database, f"an-{tag}"):
        await send(renewal("K-A"), reminder("K-B"))
        await consumed(kafka_settings, topics, f"an-{tag}")
        assert await figures() == {"renewals.renewed": 1, "renewals.reminded": 1}
        await send(reminder("K-A"), renewal("K-B"))
        await consumed(kafka_settings, topics, f"an-{tag}")
        expected = {"renewals.renewed": 2, "renewals.reminded": 2, "renewals.converted": 2}
        assert await figures() == expected
        await send(renewal("K-A"), reminder("K-A"), reminder("K-B"), renewal("K-B"))
        await consumed(kafka_settings, topics, f"an-{tag}")
        assert await figures() == expected
    # the conversions are counted on the renewal's day (the later of the two)
    converted_days = [
        doc["start"]
        async for doc in buckets.find({"g": "day", "dim": "all", "c.renewals~converted": 2})
    ]
    assert converted_days == [datetime(2026, 11, 5, tzinfo=UTC)]
    await client.close()
