"""The journeys' figures through the analytics handler, its real claims, offset guards and read
models over in-memory collections (tests/unit/analytics/memory_mongo.py): totals, leave reasons,
the per-step funnel and where runs wait; the same after a replay, with a copy of an event
published again at a later offset, and with the topic read in other batches."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from services.analytics.funnels import JourneyDetail
from services.analytics.journeys import START
from tests.unit.analytics.fact_builders import T
from tests.unit.analytics.journey_builders import (
    World,
    entered,
    left,
    onboarding,
    records,
    step,
)


def steps(detail: JourneyDetail) -> list[tuple[Any, ...]]:
    return [(s.step, s.kind, s.completed, s.sent, s.unrouted, s.waiting) for s in detail.steps]


async def figures(world: World) -> tuple[Any, ...]:
    summaries = [s.model_dump() for s in await world.figures.summaries()]
    detail = await world.figures.detail("onboarding")
    assert detail is not None
    return summaries, detail.model_dump()


async def test_totals_leave_reasons_steps_and_where_runs_wait() -> None:
    world = World()
    await world.handle(records(onboarding()))
    (summary,) = await world.figures.summaries()
    assert summary.model_dump() == {
        "journey": "onboarding",
        "entered": 5,
        "left": 3,
        "completed": 1,
        "converted": 1,
        "exited": 1,
        "disabled": 0,
        "ended_by_update": 0,
        "conversion_rate": 0.2,
        "active": 2,  # R2 at wait-3d, R3 at the start
    }
    detail = await world.figures.detail("onboarding")
    assert detail is not None
    assert (detail.waiting_at_start, detail.active, detail.since) == (1, 2, None)
    assert steps(detail) == [
        ("welcome", "send", 4, 4, 0, 0),
        ("wait-3d", "wait", 2, 0, 0, 1),
        ("check", "branch", 2, 0, 0, 0),
        ("call", "send", 1, 0, 1, 0),
        ("bye", "exit", 1, 0, 0, 0),
    ]
    check = detail.steps[2].outcomes
    assert (check["then"], check["else"], check["event"], check["timeout"]) == (1, 1, 0, 0)
    assert [
        (v.version, v.entered, v.completed, v.converted, v.exited) for v in detail.versions
    ] == [
        (1, 4, 1, 1, 0),
        (2, 1, 0, 0, 1),
    ]
    assert await world.figures.detail("nothing-like-it") is None


async def test_the_journeys_counters_are_only_in_their_own_buckets() -> None:
    world = World()
    await world.handle(records(onboarding()))
    kept = {(d["g"], d["dim"], d["value"]) for d in world.buckets.docs.values()}
    journey = {k for k in kept if k[1] == "journey"}
    assert {g for g, _, _ in journey} == {"hour", "day", "total"}
    overall = [d for d in world.buckets.docs.values() if d["dim"] == "all"]
    names = {name for d in overall for name in d["c"]}
    assert names == {
        "events~journey~entered",
        "events~journey~step_completed",
        "events~journey~left",
    }
    (total,) = [d for d in world.buckets.docs.values() if d["g"] == "total"]
    assert (total["value"], total["c"]["journeys~entered"]) == ("onboarding", 5)


async def test_a_run_moves_from_step_to_step_batch_by_batch() -> None:
    world = World()
    d3 = T + timedelta(days=3)
    life = [
        entered("2"),
        step("2", "welcome", "send", "sent", "wait-3d"),
        step("2", "wait-3d", "wait", "waited", "check", d3),
        step("2", "check", "branch", "else", "call", d3),
        left("2", "disabled", "call", d3 + timedelta(hours=1)),
    ]
    where = []
    for n, record in enumerate(records(life)):
        await world.handler.handle([record])
        detail = await world.figures.detail("onboarding")
        assert detail is not None
        at = {s.step: s.waiting for s in detail.steps if s.waiting}
        if detail.waiting_at_start:
            at[START] = detail.waiting_at_start
        where.append(at)
        assert detail.active == sum(at.values()), n
    assert where == [{START: 1}, {"wait-3d": 1}, {"check": 1}, {"call": 1}, {}]
    detail = await world.figures.detail("onboarding")
    assert detail is not None
    assert (detail.disabled, detail.left, detail.conversion_rate) == (1, 1, 0.0)


async def test_a_copy_of_an_event_published_again_later_counts_nothing_and_moves_nothing() -> None:
    world = World()
    scenario = records(onboarding())
    await world.handle(scenario)
    before = await figures(world)
    # R2's welcome again, at a later offset (the rules service published it again), and R1's
    # entry and leave: nothing counts twice, and R2 does not go back to where welcome sent it
    d4 = T + timedelta(days=4)
    later = [
        step("2", "wait-3d", "wait", "timeout", "check", d4),
        step("2", "welcome", "send", "sent", "wait-3d", T + timedelta(minutes=1)),  # a copy
        entered("1"),  # a copy
        left("1", "completed", "call", T + timedelta(days=3)),  # a copy
    ]
    await world.handle(records(later, first=len(scenario)))
    summaries, detail = await figures(world)
    assert summaries == before[0]  # entered and left as before
    assert [(s["step"], s["completed"], s["waiting"]) for s in detail["steps"]] == [
        ("welcome", 4, 0),
        ("wait-3d", 3, 0),
        ("check", 2, 1),  # R2 waits here now
        ("call", 1, 0),
        ("bye", 1, 0),
    ]
    assert detail["steps"][1]["outcomes"]["timeout"] == 1


async def test_a_copy_in_the_same_batch_counts_once() -> None:
    world = World()
    copy = step("2", "welcome", "send", "sent", "wait-3d", T + timedelta(minutes=1))
    waited = step("2", "wait-3d", "wait", "waited", "check", T + timedelta(days=3))
    life = [entered("2"), copy, waited, copy]
    await world.handle(records(life), size=10)
    detail = await world.figures.detail("onboarding")
    assert detail is not None
    assert [(s.step, s.completed, s.waiting) for s in detail.steps] == [
        ("welcome", 1, 0),
        ("wait-3d", 1, 0),
        ("check", 0, 1),
    ]


@pytest.mark.parametrize("size", [1, 3, 100])
async def test_a_replay_of_the_topic_changes_nothing(size: int) -> None:
    world = World()
    scenario = records(onboarding())
    await world.handle(scenario)
    before, state = await figures(world), world.state()
    writes = world.runs.writes
    await world.handle(scenario, size)  # from offset 0, in other batches: a new consumer group
    await world.handle(scenario[5:9], 2)  # and a redelivery of some of it
    assert await figures(world) == before
    assert world.state() == state
    assert world.runs.writes == writes  # the runs were not even rewritten


async def test_journeys_on_other_partitions_and_journeys_are_kept_apart() -> None:
    world = World()
    await world.handle(records(onboarding()))
    other = [
        entered("7", journey="win-back"),
        step("7", "offer", "send", "sent", None, journey="win-back"),
        left("7", "converted", "offer", journey="win-back"),
        entered("8", journey="win-back"),
    ]
    await world.handle(records(other, partition=3))
    found = {s.journey: (s.entered, s.converted, s.active) for s in await world.figures.summaries()}
    assert found == {"onboarding": (5, 1, 2), "win-back": (2, 1, 1)}
    detail = await world.figures.detail("win-back")
    assert detail is not None
    assert [(s.step, s.sent) for s in detail.steps] == [("offer", 1)]
    assert detail.conversion_rate == 0.5


async def test_a_window_counts_what_happened_in_it() -> None:
    world = World()
    await world.handle(records(onboarding()))
    day = T.replace(hour=0, minute=0)  # the day buckets in the window count
    first_day = await world.figures.summaries(day, day + timedelta(days=1))
    assert [(s.entered, s.converted, s.completed, s.active) for s in first_day] == [(5, 0, 0, 2)]
    later = await world.figures.detail(
        "onboarding", day + timedelta(days=1), day + timedelta(days=5)
    )
    assert later is not None
    assert (later.entered, later.converted, later.completed, later.exited) == (0, 1, 1, 1)
    assert [(s.step, s.completed) for s in later.steps][:2] == [("welcome", 0), ("wait-3d", 2)]
