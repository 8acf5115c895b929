"""The people side of the analytics API (services/analytics/api.py, report.py) over fake
aggregates and in-memory read models: the task summary, the open and overdue tasks, revisit
compliance, the subjects without owner, and those figures in the report."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import cast

import httpx
from fastapi import FastAPI

from services.analytics.aggregates import Aggregates
from services.analytics.api import analytics_router
from services.analytics.people import Revisit, fold_all
from services.analytics.report import People, Reporting
from tests.unit.analytics.callers import as_admin
from tests.unit.analytics.fact_builders import T
from tests.unit.analytics.people_fakes import FakeRevisits, FakeSubjects, FakeTasks, people
from tests.unit.analytics.test_people import ev
from tests.unit.analytics.test_report import MINUTES, WINDOW, FakeAggregates, Query, row

H = timedelta(hours=1)


@asynccontextmanager
async def api(fake: FakeAggregates, found: People | None) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    reporting = Reporting(cast(Aggregates, fake), MINUTES, 40.0, "EUR", found)
    app.include_router(analytics_router(reporting, as_admin))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://analytics") as http:
        yield http


def world() -> People:
    tasks = FakeTasks()
    tasks.tasks = fold_all(
        {},
        [
            ev("created", T, "T-1", owner_id="S-1", team="north"),
            ev("completed", T + 2 * H, "T-1"),
            ev("created", T, "T-2", owner_id="S-2", team="north"),
            ev("completed", T + 6 * H, "T-2"),
            ev("created", T - H, "T-3", owner_id="S-1", team="south"),
            ev("overdue", T + 48 * H, "T-3", owner_id="S-1", due_at=(T + 47 * H).isoformat()),
            ev("created", T + H, "T-4", owner_id="S-2", team="north"),
        ],
    )
    revisits = FakeRevisits()
    revisits.latest = {
        r.about: r
        for r in (
            Revisit("channel:CH-1", True, "A", 14, T, "k1", team="north"),
            Revisit("channel:CH-2", False, "A", 14, T, "k2", team="north"),
            Revisit("customer:C-1", True, "B", 30, T, "k3", owner="S-1", team="south"),
        )
    }
    subjects = FakeSubjects(
        {
            "customer:C-1": {"owner": "S-1"},
            "customer:C-2": {"channel": "CH-1"},
            "customer:C-3": {},
            "channel:CH-1": {"channel": "CH-1"},
        }
    )
    return people(tasks, revisits, subjects)


DAY = [
    row(
        2,
        {
            "tasks.created": 4,
            "tasks.completed": 2,
            "tasks.overdue": 1,
            "tasks.escalated": 3,
            "tasks.escalated.level_2": 1,
            "tasks.escalated.level_1": 2,
            "tasks.snoozed": 5,
        },
    )
]


async def test_the_task_summary_counts_times_and_open_tasks_by_owner_and_team() -> None:
    fake = FakeAggregates(DAY)
    async with api(fake, world()) as http:
        answer = await http.get("/v1/tasks/summary", params=WINDOW)
        by_owner = await http.get("/v1/tasks/summary", params={**WINDOW, "owner": "S-1"})
    assert answer.status_code == 200, answer.text
    summary = answer.json()
    assert {k: summary[k] for k in ("created", "completed", "overdue", "escalated")} == {
        "created": 4,
        "completed": 2,
        "overdue": 1,
        "escalated": 3,
    }
    assert summary["escalated_by_level"] == {"1": 2, "2": 1}
    assert (summary["snoozed"], summary["reassigned"]) == (5, 0)
    assert summary["median_hours_to_complete"] == 4.0  # 2 h and 6 h
    assert summary["completed_measured"] == 2
    assert (summary["open"], summary["open_overdue"]) == (2, 1)
    assert summary["by_owner"] == [
        {"value": "S-1", "open": 1, "overdue": 1, "oldest_created_at": "2026-11-02T09:15:00Z"},
        {"value": "S-2", "open": 1, "overdue": 0, "oldest_created_at": "2026-11-02T11:15:00Z"},
    ]
    assert [t["value"] for t in summary["by_team"]] == ["south", "north"]
    # of one owner: the counters of the owner dimension, the owner's tasks
    assert fake.queries[-1].dim == "owner"
    assert fake.queries[-1].value == "S-1"
    assert by_owner.json()["median_hours_to_complete"] == 2.0
    assert by_owner.json()["open"] == 1


async def test_the_open_tasks_oldest_first_with_filters() -> None:
    async with api(FakeAggregates(), world()) as http:
        everyone = (await http.get("/v1/tasks")).json()
        overdue = (await http.get("/v1/tasks", params={"overdue": "true"})).json()
        on_time = (await http.get("/v1/tasks", params={"overdue": "false"})).json()
        north = (await http.get("/v1/tasks", params={"team": "north"})).json()
        s2 = (await http.get("/v1/tasks", params={"owner": "S-2", "limit": 1})).json()
        bad = await http.get("/v1/tasks", params={"limit": 0})
    assert [t["task_id"] for t in everyone] == ["T-3", "T-4"]
    assert everyone[0] == {
        "task_id": "T-3",
        "about": "customer:C-1",
        "owner": "S-1",
        "team": "south",
        "rule": "followup",
        "title": None,
        "priority": "normal",
        "status": "open",
        "overdue": True,
        "escalation_level": 0,
        "created_at": "2026-11-02T09:15:00Z",
        "due_at": "2026-11-04T09:15:00Z",
        "completed_at": None,
    }
    assert [t["task_id"] for t in overdue] == ["T-3"]
    assert [t["task_id"] for t in on_time] == ["T-4"]
    assert [t["task_id"] for t in north] == ["T-4"]
    assert [t["task_id"] for t in s2] == ["T-4"]
    assert bad.status_code == 422


async def test_revisit_compliance_by_tier_and_team() -> None:
    async with api(FakeAggregates(), world()) as http:
        found = (await http.get("/v1/revisits/compliance")).json()
        north = await http.get("/v1/revisits/compliance", params={"dim": "team", "value": "north"})
        bad = await http.get("/v1/revisits/compliance", params={"dim": "channel"})
    assert (found["subjects"], found["in_cadence"], found["rate"]) == (3, 2, 0.6667)
    assert found["by_tier"] == [
        {"value": "A", "subjects": 2, "in_cadence": 1, "rate": 0.5},
        {"value": "B", "subjects": 1, "in_cadence": 1, "rate": 1.0},
    ]
    assert [(r["value"], r["rate"]) for r in found["by_team"]] == [("north", 0.5), ("south", 1.0)]
    assert north.json()["subjects"] == 2
    assert bad.status_code == 422


async def test_the_subjects_without_owner() -> None:
    async with api(FakeAggregates(), world()) as http:
        found = (await http.get("/v1/subjects/unowned")).json()
    assert found == {"customers": 2, "channels": 1}


async def test_the_report_has_the_people_side() -> None:
    fake = FakeAggregates(DAY)
    async with api(fake, world()) as http:
        report = (await http.get("/v1/report", params=WINDOW)).json()
        of_owner = await http.get("/v1/report", params={**WINDOW, "dim": "owner", "value": "S-2"})
    assert fake.queries[0] == Query(
        "day", "all", fake.queries[0].since, fake.queries[0].until, None
    )
    assert (report["tasks_created"], report["tasks_completed"]) == (4, 2)
    assert (report["tasks_overdue"], report["tasks_escalated"]) == (1, 3)
    assert report["median_hours_to_complete"] == 4.0
    assert report["revisit_compliance"] == 0.6667
    assert (report["unowned_customers"], report["unowned_channels"]) == (2, 1)
    owner = of_owner.json()
    assert owner["median_hours_to_complete"] == 6.0
    assert owner["revisit_compliance"] is None  # S-2 owns no subject under a cadence
    assert owner["unowned_customers"] is None  # not a figure of an owner


async def test_without_read_models_the_report_has_the_counters_only() -> None:
    async with api(FakeAggregates(DAY), None) as http:
        report = (await http.get("/v1/report", params=WINDOW)).json()
        tasks = await http.get("/v1/tasks")
    assert report["tasks_created"] == 4
    assert report["median_hours_to_complete"] is None
    assert tasks.status_code == 404
