"""The people side of analytics through the real broker and MongoDB-wire server: assignment and
task counters, the tasks and revisits read models, the median time to complete and the subjects
without owner equal the ground truth after upstream duplicates, a crash in the middle of a read
model's write, and a full replay into the existing database."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.collection import AsyncCollection

from shared.events.envelope import CanonicalEvent
from shared.mongo import make_client
from shared.settings import KafkaSettings, MongoSettings, TopicSettings
from tests.integration.analytics_access import HEADERS
from tests.integration.test_analytics_kafka import DAY, analytics, consumed, counters, event
from tests.kafka_helpers import publish_events

pytestmark = pytest.mark.integration

H = timedelta(hours=1)
DUE = DAY + 24 * H
TASKS = 6  # T-0..T-5, owners S-0 and S-1, teams north and south


def task(kind: str, n: int, at: Any, tag: str = "", **data: Any) -> CanonicalEvent:
    body = {"task_id": f"T-{n}", "about": f"customer:C-{n}", **data}
    return event(f"{kind}-{n}{tag}", f"task.{kind}", at, **body)


def revisit(n: str, about: str, at: Any, in_cadence: bool, tier: str, team: str) -> CanonicalEvent:
    return event(
        n,
        "revisit.status_changed",
        at,
        about=about,
        in_cadence=in_cadence,
        tier=tier,
        every_days=14,
        team=team,
        changed_at=at.isoformat(),
    )


def owner_of(owned: bool, field: str, owner: str) -> dict[str, Any]:
    return {field: owner} if owned else {}


def people_scenario() -> list[CanonicalEvent]:
    events = [
        event(
            f"c-{n}",
            "customer.upserted",
            customer_id=f"C-{n}",
            name=f"Customer {n}",
            timezone="UTC",
            **owner_of(n < 3, "owner_id", f"S-{n}"),  # C-3..C-5 without owner
        )
        for n in range(6)
    ]
    events += [
        event(
            f"ch-{n}",
            "channel.upserted",
            channel_id=f"CH-{n}",
            name=f"Dealer {n}",
            timezone="UTC",
            **owner_of(n == 1, "manager_id", "S-0"),  # CH-2 and CH-3 without manager
        )
        for n in (1, 2, 3)
    ]

    def assigned(n: str, kind: str, subject: str, owner: str, **more: Any) -> CanonicalEvent:
        body = {f"{kind}_id": subject, "owner_id": owner, "assigned_at": DAY.isoformat(), **more}
        return event(n, f"{kind}.assigned", **body)

    events += [
        assigned("a-1", "customer", "C-3", "S-1", team="north", reason="unowned"),
        assigned("a-2", "channel", "CH-2", "S-2", team="south", reason="unowned"),
        assigned("a-3", "customer", "C-0", "S-2", previous_owner_id="S-0", reason="reclaimed"),
    ]
    for n in range(TASKS):
        created = DAY + n * H
        events.append(
            task(
                "created",
                n,
                created,
                owner_id=f"S-{n % 2}",
                team="north" if n % 2 == 0 else "south",
                rule="followup",
                due_at=DUE.isoformat(),
                created_at=created.isoformat(),
            )
        )
    # T-0, T-1, T-2 done after 2, 4 and 9 hours (median 4); T-0 done twice, the first counts
    for n, hours in ((0, 2), (1, 4), (2, 9)):
        done = DAY + n * H + hours * H
        events.append(task("completed", n, done, completed_at=done.isoformat()))
    late = DAY + 20 * H
    events.append(task("completed", 0, late, "-again", completed_at=late.isoformat()))
    # T-3 overdue, then snoozed twice: not overdue any more; T-5 overdue and escalated twice
    for n in (3, 5):
        at = DUE + H
        overdue = {
            "owner_id": f"S-{n % 2}",
            "due_at": DUE.isoformat(),
            "overdue_at": at.isoformat(),
        }
        events.append(task("overdue", n, at, **overdue))
    for k, hours in ((1, 2), (2, 3)):
        at = DUE + hours * H
        snooze = {"due_at": (DUE + 48 * H).isoformat(), "snoozed_at": at.isoformat()}
        events.append(task("snoozed", 3, at, f"-{k}", **snooze))
    for level in (1, 2):
        at = DUE + (1 + level) * H
        escalated = {"owner_id": "S-1", "level": level, "escalated_to": f"M-{level}"}
        events.append(
            task("escalated", 5, at, f"-{level}", **escalated, escalated_at=at.isoformat())
        )
    at = DAY + 10 * H
    events.append(task("reassigned", 4, at, owner_id="S-9", reassigned_at=at.isoformat()))
    # revisits: CH-1 falls out of cadence; C-1's older status is read after its newer one
    events += [
        revisit("rv-1", "channel:CH-1", DAY, True, "A", "north"),
        revisit("rv-2", "channel:CH-1", DAY + H, False, "A", "north"),
        revisit("rv-3", "channel:CH-2", DAY, True, "A", "south"),
        revisit("rv-4", "customer:C-0", DAY, True, "B", "north"),
        revisit("rv-5", "customer:C-1", DAY + H, False, "B", "north"),
        revisit("rv-6", "customer:C-1", DAY, True, "B", "north"),
    ]
    return events


TRUTH = {
    "events.customer.upserted": 6,
    "events.channel.upserted": 3,
    "customers.new": 6,
    "events.customer.assigned": 2,
    "events.channel.assigned": 1,
    "assignments": 3,
    "assignments.unowned": 2,
    "assignments.reclaimed": 1,
    "assignments.reassigned": 1,
    "events.task.created": TASKS,
    "events.task.completed": 4,
    "events.task.overdue": 2,
    "events.task.snoozed": 2,
    "events.task.escalated": 2,
    "events.task.reassigned": 1,
    "events.revisit.status_changed": 6,
    "tasks.created": TASKS,
    "tasks.completed": 3,
    "tasks.overdue": 2,
    "tasks.snoozed": 2,
    "tasks.escalated": 2,
    "tasks.escalated.level_1": 1,
    "tasks.escalated.level_2": 1,
    "tasks.reassigned": 1,
}
WINDOW = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-05T00:00:00Z"}


async def figures(http: httpx.AsyncClient) -> dict[str, Any]:
    """Everything the API says about the people side."""
    return {
        "summary": (await http.get("/v1/tasks/summary", params=WINDOW)).json(),
        "open": (await http.get("/v1/tasks")).json(),
        "overdue": (await http.get("/v1/tasks", params={"overdue": "true"})).json(),
        "compliance": (await http.get("/v1/revisits/compliance")).json(),
        "unowned": (await http.get("/v1/subjects/unowned")).json(),
        "report": (await http.get("/v1/report", params=WINDOW)).json(),
    }


async def snapshot(collection: AsyncCollection[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc async for doc in collection.find({}).sort("_id", 1)]


async def test_people_figures_equal_the_ground_truth_after_duplicates_a_crash_and_a_replay(
    kafka_settings: KafkaSettings,
    mongo_settings: MongoSettings,
    topics: TopicSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tag = uuid.uuid4().hex[:8]
    database = f"analytics_{tag}"
    client = make_client(mongo_settings, "test")
    db = client[database]
    events = people_scenario()
    await publish_events(kafka_settings, topics.events, events)
    await publish_events(kafka_settings, topics.events, events)  # upstream published again

    # a crash in the middle of the tasks' write: half of it applied, then the server went away
    from pymongo.asynchronous.collection import AsyncCollection as Collection

    real = Collection.bulk_write
    crashed: list[int] = []

    async def half_then_fail(self: Any, requests: Any, *args: Any, **kwargs: Any) -> Any:
        if self.name == "analytics_tasks" and not crashed and len(requests) > 1:
            crashed.append(len(requests))
            await real(self, requests[: len(requests) // 2], *args, **kwargs)
            raise ConnectionError("the server went away mid-batch")
        return await real(self, requests, *args, **kwargs)

    monkeypatch.setattr(Collection, "bulk_write", half_then_fail)
    async with analytics(kafka_settings, mongo_settings, topics, database, f"an-{tag}") as svc:
        await consumed(kafka_settings, topics, f"an-{tag}")
        transport = httpx.ASGITransport(app=svc.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://analytics", headers=HEADERS
        ) as http:
            first = await figures(http)
            page = await http.get("/tasks", params={**WINDOW, "lang": "zh"})
    assert crashed, "the crash was not exercised"
    buckets = db["analytics_buckets"]
    assert await counters(buckets) == TRUTH
    by_team = await counters(buckets, "team")
    assert by_team["tasks.created"] == TASKS
    assert by_team["assignments"] == 2  # the reclaim said no team
    by_owner = await counters(buckets, "owner")
    assert by_owner["tasks.completed"] == 3  # attributed by the read model

    summary = first["summary"]
    assert {k: summary[k] for k in ("created", "completed", "overdue", "escalated")} == {
        "created": TASKS,
        "completed": 3,
        "overdue": 2,
        "escalated": 2,
    }
    assert summary["escalated_by_level"] == {"1": 1, "2": 1}
    assert (summary["median_hours_to_complete"], summary["completed_measured"]) == (4.0, 3)
    assert (summary["open"], summary["open_overdue"]) == (3, 1)
    assert [(x["value"], x["open"], x["overdue"]) for x in summary["by_owner"]] == [
        ("S-1", 2, 1),  # T-3 (oldest open) and T-5
        ("S-9", 1, 0),  # T-4, reassigned
    ]
    assert [t["task_id"] for t in first["open"]] == ["T-3", "T-4", "T-5"]  # the oldest first
    snoozed = first["open"][0]
    assert (snoozed["due_at"], snoozed["overdue"]) == ("2026-11-05T10:00:00Z", False)
    assert [(t["task_id"], t["escalation_level"]) for t in first["overdue"]] == [("T-5", 2)]
    compliance = first["compliance"]
    assert (compliance["subjects"], compliance["in_cadence"], compliance["rate"]) == (4, 2, 0.5)
    assert [(r["value"], r["rate"]) for r in compliance["by_tier"]] == [("A", 0.5), ("B", 0.5)]
    assert [(r["value"], r["rate"]) for r in compliance["by_team"]] == [
        ("north", 0.3333),
        ("south", 1.0),
    ]
    assert first["unowned"] == {"customers": 2, "channels": 1}  # C-4, C-5; CH-3
    report = first["report"]
    assert (report["tasks_created"], report["median_hours_to_complete"]) == (TASKS, 4.0)
    assert (report["revisit_compliance"], report["unowned_customers"]) == (0.5, 2)
    assert page.status_code == 200
    assert "<td>T-5</td>" in page.text
    assert "各负责人待办任务" in page.text

    tasks_before = await snapshot(db["analytics_tasks"])
    revisits_before = await snapshot(db["analytics_revisits"])
    # a full replay of the topic from offset 0 into the existing database changes nothing
    group = f"an-{tag}-replay"
    async with analytics(kafka_settings, mongo_settings, topics, database, group) as svc:
        await consumed(kafka_settings, topics, group)
        transport = httpx.ASGITransport(app=svc.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://analytics", headers=HEADERS
        ) as http:
            again = await figures(http)
    assert await counters(buckets) == TRUTH
    assert again == first
    assert await snapshot(db["analytics_tasks"]) == tasks_before  # not even rewritten (rev)
    assert await snapshot(db["analytics_revisits"]) == revisits_before
    await client.close()
