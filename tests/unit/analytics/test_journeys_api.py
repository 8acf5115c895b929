"""The journeys' endpoints of the analytics API (services/analytics/api.py, funnels.py) over the
handler's in-memory world: the list, one journey with its versions and steps, windows, a journey
never seen, and the series of the journey dimension."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from services.analytics.api import analytics_router
from services.analytics.report import Reporting
from tests.unit.analytics.callers import as_admin
from tests.unit.analytics.journey_builders import World, onboarding, records
from tests.unit.analytics.test_report import MINUTES


@asynccontextmanager
async def api(world: World | None = None) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    figures = world.figures if world is not None else None
    aggregates = (world or World()).aggregates
    reporting = Reporting(aggregates, MINUTES, 40.0, "EUR", None, figures)
    app.include_router(analytics_router(reporting, as_admin))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://analytics") as http:
        yield http


async def scenario() -> World:
    world = World()
    await world.handle(records(onboarding()))
    return world


async def test_the_journeys_with_their_totals_and_conversion_rate() -> None:
    async with api(await scenario()) as http:
        answer = await http.get("/v1/journeys")
    assert answer.status_code == 200, answer.text
    assert answer.json() == [
        {
            "journey": "onboarding",
            "entered": 5,
            "left": 3,
            "completed": 1,
            "converted": 1,
            "exited": 1,
            "disabled": 0,
            "ended_by_update": 0,
            "conversion_rate": 0.2,
            "active": 2,
        }
    ]


async def test_one_journey_with_its_versions_and_its_steps_in_the_order_first_seen() -> None:
    async with api(await scenario()) as http:
        answer = await http.get("/v1/journeys/onboarding")
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert {k: found[k] for k in ("journey", "entered", "converted", "active")} == {
        "journey": "onboarding",
        "entered": 5,
        "converted": 1,
        "active": 2,
    }
    assert (found["since"], found["until"], found["waiting_at_start"]) == (None, None, 1)
    assert [(v["version"], v["entered"], v["conversion_rate"]) for v in found["versions"]] == [
        (1, 4, 0.25),
        (2, 1, 0.0),
    ]
    assert [s["step"] for s in found["steps"]] == ["welcome", "wait-3d", "check", "call", "bye"]
    assert found["steps"][0] == {
        "step": "welcome",
        "kind": "send",
        "completed": 4,
        "sent": 4,
        "unrouted": 0,
        "outcomes": {
            "sent": 4,
            "unrouted": 0,
            "waited": 0,
            "event": 0,
            "timeout": 0,
            "then": 0,
            "else": 0,
            "set": 0,
            "emitted": 0,
            "exited": 0,
        },
        "waiting": 0,
    }
    assert [(s["step"], s["waiting"]) for s in found["steps"] if s["waiting"]] == [("wait-3d", 1)]


async def test_a_journey_never_seen_is_not_found() -> None:
    async with api(await scenario()) as http:
        unknown = await http.get("/v1/journeys/win-back")
        too_long = await http.get("/v1/journeys/" + "x" * 65)
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "no journey 'win-back'"}
    assert too_long.status_code == 422


async def test_a_window_counts_the_day_buckets_in_it() -> None:
    async with api(await scenario()) as http:
        first = await http.get(
            "/v1/journeys", params={"from": "2026-11-02T00:00:00Z", "to": "2026-11-03T00:00:00Z"}
        )
        since = await http.get("/v1/journeys/onboarding", params={"from": "2026-11-03T00:00:00Z"})
        bad = await http.get("/v1/journeys", params={"from": "yesterday"})
    assert [(j["entered"], j["converted"], j["active"]) for j in first.json()] == [(5, 0, 2)]
    later = since.json()
    assert (later["entered"], later["converted"], later["exited"]) == (0, 1, 1)
    assert later["since"] == "2026-11-03T00:00:00Z"
    assert later["until"] is not None  # to now
    assert bad.status_code == 422


async def test_the_journey_dimension_has_a_series() -> None:
    async with api(await scenario()) as http:
        rows = await http.get(
            "/v1/series",
            params={"dim": "journey", "from": "2026-11-01T00:00:00Z", "to": "2026-11-09T00:00:00Z"},
        )
        report = await http.get("/v1/report", params={"dim": "journey"})
    assert rows.status_code == 200, rows.text
    found = [
        (r["start"][:10], r["value"], r["counters"].get("journeys.entered", 0)) for r in rows.json()
    ]
    assert found == [
        ("2026-11-02", "onboarding", 5),  # the entries, the first sends
        ("2026-11-03", "onboarding", 0),  # R4 converted
        ("2026-11-05", "onboarding", 0),  # the waits ended
    ]
    assert report.status_code == 422  # the report is not kept by journey


async def test_without_journeys_there_are_no_journey_endpoints() -> None:
    async with api() as http:
        answer = await http.get("/v1/journeys")
    assert answer.status_code == 404
