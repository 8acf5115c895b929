"""The journeys' figures through the real broker and MongoDB-wire server: the runs entered and
left by reason, per version, each step's completions and outcomes in the order first seen, and
the runs waiting at each step equal the ground truth — after copies of events published again
at later offsets (the same CloudEvents ids), a crash in the middle of the runs' write, and a
full replay of the topic into the existing database."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from shared.events.envelope import CanonicalEvent
from shared.mongo import make_client
from shared.settings import KafkaSettings, MongoSettings, TopicSettings
from tests.integration.analytics_access import HEADERS
from tests.integration.test_analytics_kafka import DAY, analytics, consumed, event
from tests.integration.test_analytics_tasks import snapshot
from tests.kafka_helpers import publish_events
from tests.waiting import eventually

pytestmark = pytest.mark.integration

M = timedelta(minutes=1)
D3 = DAY + timedelta(days=3)
RUNS = 12  # R-0..R-11 of "onboarding", each about its own customer: on every partition


def journey_event(
    what: str, run: str, at: datetime, tag: str = "", version: int = 1, **data: Any
) -> CanonicalEvent:
    body = {"about": f"customer:C-{run}", "journey": "onboarding", "version": version, "run": run}
    time_field = {"entered": "entered_at", "step_completed": "completed_at", "left": "left_at"}
    return event(
        f"{run}:{what}{tag}",
        f"journey.{what}",
        at,
        **body,
        **data,
        **{time_field[what]: at.isoformat()},
    )


def entered(run: str, at: datetime, version: int = 1) -> CanonicalEvent:
    return journey_event("entered", run, at, version=version, trigger="upkeep.customer.upserted.v1")


def step(
    run: str, at: datetime, name: str, kind: str, outcome: str, nxt: str | None, v: int = 1
) -> CanonicalEvent:
    more: dict[str, Any] = {"step": name, "kind": kind, "outcome": outcome}
    if nxt is not None:
        more["next_step"] = nxt
    if outcome == "sent":
        more["action_key"] = f"journey:onboarding:{run}:{name}"
    return journey_event("step_completed", run, at, f":{name}:{outcome}", version=v, **more)


def left(run: str, at: datetime, reason: str, last: str, version: int = 1) -> CanonicalEvent:
    return journey_event("left", run, at, version=version, reason=reason, last_step=last)


def hex_run(n: int) -> str:
    return f"{n:04x}"


def journey_scenario() -> tuple[list[CanonicalEvent], list[CanonicalEvent]]:
    """The events of twelve runs, and what comes after them: more steps, and copies of events
    published before (the same ids, later offsets)."""
    first: list[CanonicalEvent] = []
    later: list[CanonicalEvent] = []
    for n in range(RUNS):
        run, at = hex_run(n), DAY + n * M
        v = 2 if n >= 10 else 1
        first.append(entered(run, at, v))
        if n == 9:
            continue  # entered, no step yet — waits at the start
        outcome = "unrouted" if n == 8 else "sent"
        first.append(step(run, at, "welcome", "send", outcome, "wait-3d", v))
        if n in (6, 7):
            continue  # R-6, R-7 wait three days; R-7's welcome is published again below
        if n == 5:
            first.append(left(run, DAY + timedelta(days=1), "converted", "wait-3d"))
            continue  # the goal met while waiting
        if n == 4:
            first.append(left(run, DAY + timedelta(days=2), "disabled", "wait-3d"))
            continue  # the journey was switched off
        if n == 8:
            first.append(left(run, DAY + timedelta(days=2), "ended_by_update", "wait-3d"))
            continue  # a new version no longer has its step
        first.append(step(run, D3 + n * M, "wait-3d", "wait", "waited", "check", v))
        branch = "else" if n in (3, 11) else "then"
        nxt = "call" if branch == "then" else "bye"
        first.append(step(run, D3 + n * M, "check", "branch", branch, nxt, v))
        if branch == "else":
            first.append(step(run, D3 + n * M, "bye", "exit", "exited", None, v))
            first.append(left(run, D3 + n * M, "exited", "bye", v))
        elif n in (2, 10):
            continue  # wait at the call step (a wait_for: the reply has not come)
        else:
            first.append(step(run, D3 + n * M, "call", "wait_for", "event", None, v))
            first.append(left(run, D3 + n * M, "completed", "call", v))
    # later: R-6 waited its three days (a timeout), so it waits at check; copies of R-6's and
    # R-7's welcome, R-0's entry and its leave, at later offsets: nothing more counts, and R-6
    # does not go back to wait-3d
    r6, r7, r0 = hex_run(6), hex_run(7), hex_run(0)
    later.append(step(r6, D3 + 6 * M, "wait-3d", "wait", "timeout", "check"))
    copies = {f"{r}:step_completed:welcome:sent" for r in (r6, r7)} | {
        f"{r0}:entered",
        f"{r0}:left",
    }
    later += [e for e in first if e.id in copies]
    return first, later


# the ground truth of the scenario, counted by hand
SUMMARY = {
    "journey": "onboarding",
    "entered": RUNS,
    "left": 7,  # completed; exited; R-4 disabled; R-5 converted; R-8 updated
    "completed": 2,
    "converted": 1,
    "exited": 2,
    "disabled": 1,
    "ended_by_update": 1,
    "conversion_rate": round(1 / RUNS, 4),
    "active": 5,  # at call; R-6 at check; R-7 at wait-3d; R-9 at the start
}
STEPS = [
    # step, kind, completed, sent, unrouted, waiting
    ("welcome", "send", 11, 10, 1, 0),
    ("wait-3d", "wait", 7, 0, 0, 1),  # R-0..R-3, R-10, R-11 waited; R-6 timed out; R-7 waits
    ("check", "branch", 6, 0, 0, 1),  # R-6 waits here
    ("call", "wait_for", 2, 0, 0, 2),
    ("bye", "exit", 2, 0, 0, 0),
]
WAITING_AT_START = 1
VERSIONS = [
    # version, entered, completed, converted, exited, disabled, ended_by_update
    (1, 10, 2, 1, 1, 1, 1),
    (2, 2, 0, 0, 1, 0, 0),
]


async def figures(http: httpx.AsyncClient) -> dict[str, Any]:
    return {
        "list": (await http.get("/v1/journeys")).json(),
        "detail": (await http.get("/v1/journeys/onboarding")).json(),
        "window": (
            await http.get(
                "/v1/journeys/onboarding",
                params={"from": "2026-11-05T00:00:00Z", "to": "2026-11-06T00:00:00Z"},
            )
        ).json(),
        "unknown": (await http.get("/v1/journeys/win-back")).status_code,
    }


def the_truth(found: dict[str, Any]) -> bool:
    detail = found["detail"]
    if found["list"] != [SUMMARY] or "steps" not in detail:
        return False
    steps = [
        (s["step"], s["kind"], s["completed"], s["sent"], s["unrouted"], s["waiting"])
        for s in detail["steps"]
    ]
    versions = [
        (
            v["version"],
            v["entered"],
            v["completed"],
            v["converted"],
            v["exited"],
            v["disabled"],
            v["ended_by_update"],
        )
        for v in detail["versions"]
    ]
    return (
        steps == STEPS
        and versions == VERSIONS
        and detail["waiting_at_start"] == WAITING_AT_START
        and {k: detail[k] for k in SUMMARY} == SUMMARY
    )


async def test_journey_figures_equal_the_ground_truth_after_copies_a_crash_and_a_replay(
    kafka_settings: KafkaSettings,
    mongo_settings: MongoSettings,
    topics: TopicSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tag = uuid.uuid4().hex[:8]
    database = f"analytics_{tag}"
    client = make_client(mongo_settings, "test")
    db = client[database]
    first, later = journey_scenario()
    await publish_events(kafka_settings, topics.events, first)
    await publish_events(kafka_settings, topics.events, later)

    # a crash in the middle of the runs' write: half of it applied, then the server went away
    from pymongo.asynchronous.collection import AsyncCollection as Collection

    real = Collection.bulk_write
    crashed: list[int] = []

    async def half_then_fail(self: Any, requests: Any, *args: Any, **kwargs: Any) -> Any:
        if self.name == "analytics_journey_runs" and not crashed and len(requests) > 1:
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
            seen: list[dict[str, Any]] = [{}]

            async def reached() -> bool:
                seen[0] = await figures(http)
                return the_truth(seen[0])

            await eventually(reached, 120, interval=0.5, what=lambda: seen[0])
            first_figures = seen[0]
            page = await http.get(
                "/journeys",
                params={"from": "2026-10-26T00:00:00Z", "to": "2026-11-26T00:00:00Z", "lang": "zh"},
            )
    assert crashed, "the crash was not exercised"
    assert first_figures["unknown"] == 404
    # the window of 5 November: the waits, branches and leaves of that day, waiting as now
    window = first_figures["window"]
    assert (window["entered"], window["completed"], window["exited"]) == (0, 2, 2)
    assert [(s["step"], s["completed"]) for s in window["steps"]][:3] == [
        ("welcome", 0),
        ("wait-3d", 7),
        ("check", 6),
    ]
    assert window["active"] == SUMMARY["active"]
    assert page.status_code == 200
    assert "<td>onboarding</td><td>12</td><td>1</td><td>2</td><td>2</td><td>5</td>" in page.text
    assert "<svg" in page.text
    assert "当前在途" in page.text

    runs_before = await snapshot(db["analytics_journey_runs"])
    journeys_before = await snapshot(db["analytics_journeys"])
    buckets_before = await snapshot(db["analytics_buckets"])
    assert len(runs_before) == RUNS
    # a full replay of the topic from offset 0 into the existing database changes nothing
    group = f"an-{tag}-replay"
    async with analytics(kafka_settings, mongo_settings, topics, database, group) as svc:
        await consumed(kafka_settings, topics, group)
        transport = httpx.ASGITransport(app=svc.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://analytics", headers=HEADERS
        ) as http:
            again = await figures(http)
    assert again == first_figures
    assert await snapshot(db["analytics_journey_runs"]) == runs_before  # not even rewritten
    assert await snapshot(db["analytics_journeys"]) == journeys_before
    assert await snapshot(db["analytics_buckets"]) == buckets_before
    await client.close()
