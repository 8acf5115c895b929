"""Every analytics API route, asked by an owner for another owner's data — by value, owner,
team, channel, CSV export, preview or archive key — refuses it or leaves it out: the routes are
walked from the OpenAPI document, so a new one is covered too."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from services.analytics.api import analytics_router
from services.analytics.costs import Costing
from services.analytics.money_api import money_router
from services.analytics.report import People, Reporting
from services.analytics.reports import Reports
from services.analytics.scope import scope_of
from services.notifier.templates import Templates
from tests.unit.analytics.callers import as_staff
from tests.unit.analytics.fact_builders import T, event
from tests.unit.analytics.journey_builders import records
from tests.unit.analytics.memory_mongo import MemoryCollection
from tests.unit.analytics.people_fakes import FakeRevisits, FakeTasks
from tests.unit.analytics.test_money_handler import world

OTHERS = ("S-2", "CH-2", "C-2", "north")  # what the owner S-1 must never see


class NoSink:
    async def publish(self, messages: Any) -> None:
        raise AssertionError("nothing is sent by a read")


async def data() -> tuple[Any, ...]:
    handler, aggregates, staff, budgets = world()
    subjects = handler._attribution  # the handler's own (FakeSubjects)
    events = [
        event("staff.upserted", "s1", staff_id="S-1", name="One", timezone="UTC", team="south"),
        event("staff.upserted", "s2", staff_id="S-2", name="Two", timezone="UTC", team="north"),
    ]
    for n in (1, 2):
        events += [
            event(
                "channel.upserted",
                f"ch{n}",
                channel_id=f"CH-{n}",
                name="D",
                timezone="UTC",
                manager_id=f"S-{n}",
            ),
            event(
                "customer.upserted",
                f"c{n}",
                customer_id=f"C-{n}",
                name="C",
                timezone="UTC",
                owner_id=f"S-{n}",
                channel_id=f"CH-{n}",
            ),
            event(
                "channel.order",
                f"o{n}",
                order_id=f"O-{n}",
                channel_id=f"CH-{n}",
                occurred_at=T.isoformat(),
                amount="100",
                currency="EUR",
            ),
            event(
                "cost.recorded",
                f"k{n}",
                about=f"channel:CH-{n}",
                cost_id=f"K-{n}",
                category="gift",
                amount="10",
                currency="EUR",
                incurred_on=f"{T:%Y-%m-%d}",
                recorded_at=T.isoformat(),
            ),
            event(
                "budget.set",
                f"b{n}",
                budget_id=f"B-{n}",
                scope="channel",
                scope_id=f"CH-{n}",
                period="month",
                period_id=f"{T:%Y-%m}",
                amount="50",
                currency="EUR",
                set_at=T.isoformat(),
            ),
        ]
    await handler.handle(records(events))
    return aggregates, staff, budgets, subjects


@asynccontextmanager
async def api_as_owner() -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    aggregates, staff, budgets, subjects = await data()
    people = People(FakeTasks(), FakeRevisits(), subjects)
    reporting = Reporting(aggregates, {"email": 6.0}, 40.0, "EUR", people)
    costing = Costing(reporting, budgets, subjects, clock=lambda: T)
    archive = MemoryCollection("analytics_reports")
    reports = Reports(reporting, costing, staff, subjects, archive, NoSink(), "actions")  # type: ignore[arg-type]
    # an archived report of the other owner, which must not be found
    await archive.insert_one(
        {
            "_id": "report:weekly:2026-W45:S-2",
            "kind": "weekly",
            "period": "2026-W45",
            "manager": "S-2",
            "created_at": T,
            "data": {},
            "csv": "x",
            "status": "published",
        }
    )
    scope = await scope_of("owner", "S-1", staff, subjects)
    caller = as_staff("S-1", scope)
    app = FastAPI()
    app.include_router(analytics_router(reporting, caller))
    app.include_router(money_router(costing, reports, staff, Templates(), Depends(caller)))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://a") as http:
        yield http, app


PROBES: list[dict[str, str]] = [
    {},
    {"dim": "owner", "value": "S-2"},
    {"dim": "channel", "value": "CH-2"},
    {"dim": "team", "value": "north"},
    {"dim": "owner"},
    {"dim": "channel"},
    {"dim": "rule"},
    {"owner": "S-2"},
    {"team": "north"},
    {"manager_id": "S-2"},
    {"manager_id": "S-2", "format": "csv"},
    {"all_periods": "true"},
]
PATH_VALUES = {"kind": "weekly", "name": "onboarding", "key": "report:weekly:2026-W45:S-2"}


async def test_an_owner_reads_nothing_of_another_owner_by_any_route() -> None:
    window = {
        "from": (T - timedelta(days=40)).isoformat(),
        "to": (T + timedelta(days=40)).isoformat(),
    }
    async with api_as_owner() as (http, _app):
        spec = (await http.get("/openapi.json")).json()
        asked = 0
        for path, operations in spec["paths"].items():
            if "get" not in operations:
                continue
            url = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m[1]], path)
            for probe in PROBES:
                answer = await http.get(url, params={**window, **probe})
                asked += 1
                assert answer.status_code < 500, (url, probe, answer.text)
                if answer.status_code == 200:
                    for other in OTHERS:
                        assert other not in answer.text, (url, probe, other, answer.text[:300])
        own = await http.get("/v1/costs", params={**window, "dim": "channel"})
    assert asked >= 12 * len(PROBES)  # every GET route was asked
    assert {r["value"] for r in own.json()} == {"CH-1"}  # and the owner's own data is there


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/series", {"dim": "owner", "value": "S-2"}),
        ("/v1/series.csv", {"dim": "channel", "value": "CH-2"}),
        ("/v1/costs.csv", {"dim": "owner", "value": "S-2"}),
        ("/v1/tasks", {"owner": "S-2"}),
        ("/v1/report", {"dim": "rule"}),
        ("/v1/savings", {"dim": "tier"}),
        ("/v1/reports/weekly/preview", {"manager_id": "S-2"}),
    ],
)
async def test_asking_outside_the_scope_is_refused(path: str, params: dict[str, str]) -> None:
    async with api_as_owner() as (http, _):
        answer = await http.get(path, params=params)
    assert answer.status_code == 403, answer.text


async def test_an_admin_only_action_is_refused_to_an_owner() -> None:
    async with api_as_owner() as (http, _):
        answer = await http.post("/v1/reports/weekly:send-now", json={"manager_id": "S-1"})
    assert answer.status_code == 403
