"""Cost, ROI, budgets and the managers' reports through the real broker and MongoDB-wire server,
with the real notifier delivering to a real SMTP server: three channels in two currencies,
published twice and replayed in full, give the figures counted by hand; a budget forecast to
overrun is alerted once (to its owner and their manager); a manager's weekly report arrives
once, with the expected figures in its HTML and its CSV attachment."""

from __future__ import annotations

import asyncio
import email
import email.policy
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from services.analytics.service import build
from services.analytics.settings import AnalyticsSettings
from shared.events.envelope import CanonicalEvent
from shared.events.types import resolve_type
from shared.runtime import Service
from shared.settings import KafkaSettings, MongoSettings, TopicSettings
from tests.integration.analytics_access import ACCESS, HEADERS
from tests.integration.ingest_fixtures import wait_assigned
from tests.integration.test_notifier_kafka import Harness, notifier
from tests.kafka_helpers import publish_events, read_topic, wait_consumed
from tests.waiting import eventually

pytestmark = pytest.mark.integration

# Monday 2026-11-23, 09:00 in Shanghai: week 47 (16-22 November) is over and its report due at
# 07:00 there; November is 22 days and 1 hour (529 of its 720 hours) old in UTC
NOW = datetime(2026, 11, 23, 1, tzinfo=UTC)


def event(n: str, type_name: str, at: datetime, **data: Any) -> CanonicalEvent:
    payload = resolve_type(type_name).model_validate(data)  # type: ignore[union-attr]
    return CanonicalEvent.build(
        event_id=n, source="test", payload=payload, time=at, source_offset="Z"
    )


def day(d: int) -> datetime:
    return datetime(2026, 11, d, 10, tzinfo=UTC)


def scenario(tag: str) -> list[CanonicalEvent]:
    staff = [
        ("S-M", None, "Li Wei", "manager"),
        ("S-O1", "S-M", "Wang Fang", "owner1"),
        ("S-O2", "S-M", "Zhang Min", "owner2"),
    ]
    events = [
        event(
            f"staff-{sid}",
            "staff.upserted",
            day(1),
            staff_id=sid,
            name=name,
            timezone="Asia/Shanghai",
            locale="en",
            email=f"{mail}-{tag}@example.com",
            manager_id=boss,
            team="east",
        )
        for sid, boss, name, mail in staff
    ]
    events += [
        event(
            f"ch-{c}",
            "channel.upserted",
            day(1),
            channel_id=c,
            name=f"Dealer {c}",
            timezone="Asia/Shanghai",
            manager_id=owner,
        )
        for c, owner in (("CH-A", "S-O1"), ("CH-B", "S-O1"), ("CH-C", "S-O2"))
    ]
    events.append(
        event(
            "c-1",
            "customer.upserted",
            day(1),
            customer_id="C-1",
            name="Customer 1",
            timezone="Asia/Shanghai",
            owner_id="S-O1",
            channel_id="CH-A",
        )
    )

    def order(
        n: str, channel: str, d: int, amount: str, currency: str, kind: str = "order"
    ) -> CanonicalEvent:
        return event(
            f"o-{n}",
            "channel.order",
            day(d),
            order_id=n,
            channel_id=channel,
            kind=kind,
            occurred_at=day(d).isoformat(),
            amount=amount,
            currency=currency,
        )

    events += [
        order("PO-1", "CH-A", 5, "5000.00", "CNY"),
        order("PO-2", "CH-A", 17, "5000.00", "CNY"),
        order("ST-1", "CH-A", 18, "3000.00", "CNY", "sell_through"),
        order("PO-3", "CH-B", 10, "2000.00", "CNY"),
        order("PO-4", "CH-C", 12, "1000.00", "USD"),
        event(
            "i-1",
            "customer.interaction",
            day(17),
            interaction_id="I-1",
            customer_id="C-1",
            kind="order",
            amount="500.00",
            currency="CNY",
            occurred_at=day(17).isoformat(),
        ),
    ]

    def cost(
        n: str, about: str, d: int, category: str, currency: str, **money: str
    ) -> CanonicalEvent:
        return event(
            f"k-{n}",
            "cost.recorded",
            day(d),
            about=about,
            cost_id=n,
            category=category,
            currency=currency,
            incurred_on=f"2026-11-{d:02d}",
            recorded_at=day(d).isoformat(),
            **money,
        )

    events += [
        cost("K-1", "channel:CH-A", 17, "travel", "CNY", amount="800.00"),
        cost("K-2", "channel:CH-A", 18, "gift", "CNY", amount="400.00"),
        cost("K-3", "channel:CH-A", 19, "staff_time", "CNY", hours="3", hourly_rate="200"),
        cost("K-4", "channel:CH-B", 10, "event", "CNY", amount="500.00"),
        cost("K-5", "channel:CH-C", 12, "rebate", "USD", amount="100.00"),
        cost("K-6", "channel:CH-C", 12, "gift", "CNY", amount="50.00"),
    ]
    events += [
        event(
            f"b-{b}",
            "budget.set",
            day(1),
            budget_id=b,
            name=f"{c} maintenance",
            scope="channel",
            scope_id=c,
            period="month",
            period_id="2026-11",
            amount=amount,
            currency="CNY",
            set_at=day(1).isoformat(),
        )
        for b, c, amount in (("B-A", "CH-A", "2000"), ("B-B", "CH-B", "1000"))
    ]
    return events


@asynccontextmanager
async def analytics(
    kafka: KafkaSettings,
    mongo: MongoSettings,
    topics: TopicSettings,
    database: str,
    group: str,
    report_every: float = 0.3,
) -> AsyncIterator[Service]:
    settings = AnalyticsSettings(
        kafka=kafka,
        mongo=mongo.model_copy(update={"database": database}),
        topics=topics,
        consumer_group=group,
        instance_id=group,
        batch_timeout_ms=50,
        batch_max_records=7,
        budget_check_s=0.3,
        report_check_s=report_every,
    )
    async with build(settings, ACCESS, clock=lambda: NOW) as service:
        (loop,) = service.loops
        task = asyncio.create_task(loop.run())
        try:
            await wait_assigned(loop)
            yield service
        finally:
            loop.stop()
            await task


def checks(job: str) -> float:
    return (
        REGISTRY.get_sample_value("upkeep_analytics_checks_total", {"check": job, "result": "ok"})
        or 0.0
    )


async def figures(service: Service) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=service.app)
    window = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}
    async with httpx.AsyncClient(transport=transport, base_url="http://a", headers=HEADERS) as http:
        found: dict[str, Any] = {}
        for dim in ("channel", "owner", "team"):
            answer = await http.get("/v1/costs", params={**window, "dim": dim})
            assert answer.status_code == 200, answer.text
            found[dim] = {
                (r["value"], c["currency"]): c
                for r in answer.json()
                for c in r["money"]["by_currency"]
            }
        budgets = await http.get("/v1/budgets", params={"all_periods": "true"})
        found["budgets"] = {b["budget_id"]: b for b in budgets.json()}
        found["csv"] = (await http.get("/v1/costs.csv", params={**window, "dim": "channel"})).text
    return found


def mails(harness: Harness, subject_part: str) -> list[EmailMessage]:
    parsed = [
        email.message_from_bytes(raw, policy=email.policy.strict) for raw in harness.sink.messages
    ]
    return [m for m in parsed if subject_part in str(m["Subject"])]


async def test_roi_budgets_an_overrun_alert_and_a_weekly_report(
    kafka_settings: KafkaSettings, mongo_settings: MongoSettings, topics: TopicSettings
) -> None:
    tag = uuid.uuid4().hex[:8]
    database = f"analytics_{tag}"
    events = scenario(tag)
    profiles = [e for e in events if e.type.endswith(".upserted.v1")]
    rest = [e for e in events if not e.type.endswith(".upserted.v1")]
    group = f"an-{tag}"
    async with notifier(kafka_settings, mongo_settings, topics) as harness:
        await harness.contacts(*[e for e in profiles if e.type == "upkeep.staff.upserted.v1"])
        # no report while the data arrives (a report goes out once, on what is counted then):
        # the first check runs at the start, when nothing is read yet; the next in an hour
        async with analytics(
            kafka_settings, mongo_settings, topics, database, group, report_every=3600
        ) as svc:
            # whom each channel and customer belongs to is known before their money arrives
            await publish_events(kafka_settings, topics.events, profiles)
            await wait_consumed(kafka_settings, group, [topics.events])
            for _ in range(2):  # upstream sent everything twice
                await publish_events(kafka_settings, topics.events, rest)
            await wait_consumed(kafka_settings, group, [topics.events])
            first = await figures(svc)
            await eventually(
                lambda: len(mails(harness, "Budget forecast to overrun")) >= 2 or None,
                what="the budget alerts did not arrive",
            )
        # a full replay into the same database (a new consumer group): the figures stay, the
        # budget's alert is not sent again, and the weekly report goes out once caught up
        async with analytics(kafka_settings, mongo_settings, topics, database, f"{group}-r") as svc:
            await wait_consumed(kafka_settings, f"{group}-r", [topics.events])
            again = await figures(svc)
            await eventually(
                lambda: mails(harness, "Weekly maintenance report 2026-W47") or None,
                what="the weekly report did not arrive",
            )
        # and once more: both checks run again, and send nothing new
        async with analytics(kafka_settings, mongo_settings, topics, database, f"{group}-r") as svc:
            (loop,) = svc.loops
            await eventually(lambda: loop.caught_up, what="the consumer did not catch up")
            ran = checks("budgets"), checks("reports")
            await eventually(
                lambda: (
                    (checks("budgets") >= ran[0] + 2 and checks("reports") >= ran[1] + 2) or None
                ),
                what="the checks did not run again",
            )
        # every action analytics published has its outcome: no later e-mail can come
        published = await read_topic(kafka_settings, topics.actions, expect=0, settle=0)
        await harness.final_outcomes({orjson.loads(r.value)["key"] for r in published})
        alert_mails = mails(harness, "Budget forecast to overrun")
        weekly = mails(harness, "Weekly maintenance report 2026-W47")

    assert first == again
    channel, owner, team = first["channel"], first["owner"], first["team"]
    # CH-A: orders 5,000 + 5,000 and C-1's 500 (its customer), cost 800 + 400 + 3 h x 200
    a = channel[("CH-A", "CNY")]
    assert (a["revenue"], a["sell_through"], a["cost"]) == ("10500.00", "3000.00", "1800.00")
    assert a["roi"] == "4.83"  # (10500 - 1800) / 1800
    assert a["cost_by_category"] == {"travel": "800.00", "gift": "400.00", "staff_time": "600.00"}
    assert a["cost_per_active_customer"] == "1800.00"  # C-1 was active in November
    b = channel[("CH-B", "CNY")]
    assert (b["revenue"], b["cost"], b["roi"]) == ("2000.00", "500.00", "3.00")
    # CH-C in two currencies, never added together
    assert channel[("CH-C", "USD")]["roi"] == "9.00"
    c_cny = channel[("CH-C", "CNY")]
    assert (c_cny["revenue"], c_cny["cost"], c_cny["roi"]) == ("0.00", "50.00", "-1.00")
    assert owner[("S-O1", "CNY")]["roi"] == "4.43"  # (12500 - 2300) / 2300
    assert owner[("S-O2", "USD")]["cost"] == "100.00"
    assert team[("east", "CNY")]["roi"] == "4.32"  # (12500 - 2350) / 2350
    assert "CH-C,USD,1000.00,0.00,100.00,9.00" in first["csv"].replace("\r", "")
    # B-A: 1,800 used of 2,000 after 529 of 720 hours -> 1,800 x 720 / 529
    budget_a = first["budgets"]["B-A"]
    assert (budget_a["used"], budget_a["forecast"]) == ("1800.00", "2449.91")
    assert budget_a["overrun_forecast"] is True
    budget_b = first["budgets"]["B-B"]
    assert (budget_b["used"], budget_b["forecast"], budget_b["overrun_forecast"]) == (
        "500.00",
        "680.53",
        False,
    )

    # one alert per recipient: the owner and the owner's manager, once
    assert sorted(str(m["To"]) for m in alert_mails) == sorted(
        [f"Wang Fang <owner1-{tag}@example.com>", f"Li Wei <manager-{tag}@example.com>"]
    )
    text = alert_mails[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "2,449.91" in text
    assert "1,800.00" in text

    # the weekly report, once, to the manager: week 47 holds PO-2, I-1 and K-1..K-3
    (report,) = weekly
    assert str(report["To"]) == f"Li Wei <manager-{tag}@example.com>"
    html = report.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "<script" not in html
    for figure in ("5,500.00", "1,800.00", "2.06", "CH-A maintenance"):
        assert figure in html, figure
    (attachment,) = list(report.iter_attachments())
    assert attachment.get_filename() == "upkeep-weekly-2026-W47.csv"
    rows = attachment.get_content().splitlines()
    assert "money,revenue,CNY,5500.00" in rows
    assert "money,cost,CNY,1800.00" in rows
    assert "money,roi,CNY,2.06" in rows
    assert "budget_forecast,CH-A maintenance,CNY,2454.55" in rows  # at the week's end: x 30 / 22
