"""services/analytics/journeys.py and the journeys' facts (services/analytics/facts.py): what a
journey event counts for, the runs read model (where a run waits, in any order of its events and
with any event seen again), the order of a journey's steps, and the figures read back from the
counters."""

from __future__ import annotations

import itertools
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.analytics.facts import read
from services.analytics.journeys import (
    START,
    Journey,
    JourneyEvent,
    Run,
    Seen,
    by_step,
    by_version,
    fold_all,
    run_key,
    sightings,
    totals,
)
from shared.events.envelope import CanonicalEvent
from tests.unit.analytics.fact_builders import T
from tests.unit.analytics.journey_builders import entered, left, onboarding, step


def payload(e: CanonicalEvent) -> JourneyEvent:
    found = e.payload()
    assert isinstance(found, JourneyEvent)
    return found


def placed(events: list[CanonicalEvent], partition: int = 0) -> list[tuple[JourneyEvent, Seen]]:
    return [(payload(e), Seen(partition, n, e.time)) for n, e in enumerate(events)]


def runs(events: list[tuple[JourneyEvent, Seen]]) -> dict[str, Run]:
    return fold_all({}, events)


def test_a_journey_event_counts_once_per_event_id_in_its_journey_only() -> None:
    found = read("events", step("1", "welcome", "send", "sent", "wait-3d").to_json())
    event_fact, journey_fact = found.facts
    assert event_fact.counters == {"events.journey.step_completed": 1}
    assert journey_fact.identity == "journey:rules\x1f1:welcome:sent:2026-11-02T10:15:00+00:00"
    assert journey_fact.counters == {
        "journeys.steps.welcome.completed": 1,
        "journeys.steps.welcome.sent": 1,
    }
    assert (journey_fact.scope, journey_fact.dims, journey_fact.subject) == (
        "journey",
        {"journey": "onboarding"},
        None,  # not attributed to the subject's owner: a step means something in its journey
    )
    assert found.journey is not None
    assert found.journey[1] == journey_fact.identity
    again = read("events", step("1", "welcome", "send", "sent", "wait-3d").to_json())
    assert [f.identity for f in again.facts] == [f.identity for f in found.facts]


def test_entries_and_leaves_count_per_version_and_reason() -> None:
    (_, entry) = read("events", entered("1", version=3).to_json()).facts
    assert entry.counters == {"journeys.entered": 1, "journeys.version.3.entered": 1}
    (_, leave) = read("events", left("1", "ended_by_update", "wait-3d", version=3).to_json()).facts
    assert leave.counters == {
        "journeys.left": 1,
        "journeys.left.ended_by_update": 1,
        "journeys.version.3.left.ended_by_update": 1,
    }


def test_a_labelled_subject_is_an_event_like_any_other() -> None:
    from tests.unit.analytics.fact_builders import event

    labelled = event(
        "subject.labelled",
        "l-1",
        "rules",
        about="customer:C-1",
        add_tags=["vip"],
        labelled_at=T.isoformat(),
    )
    found = read("events", labelled.to_json())
    assert [f.counters for f in found.facts] == [{"events.subject.labelled": 1}]
    assert found.journey is None


def test_a_run_waits_at_the_start_then_moves_from_step_to_step_and_then_nowhere() -> None:
    events = placed(
        [
            entered("1"),
            step("1", "welcome", "send", "sent", "wait-3d"),
            step("1", "wait-3d", "wait", "waited", "check", T + timedelta(days=3)),
            step("1", "check", "branch", "then", "call", T + timedelta(days=3)),
            step("1", "call", "send", "unrouted", None, T + timedelta(days=3)),
            left("1", "completed", "call", T + timedelta(days=3)),
        ]
    )
    where = [runs(events[: n + 1])[run_key("onboarding", "1")].waiting_at for n in range(6)]
    assert where == [START, "wait-3d", "check", "call", None, None]
    done = runs(events)[run_key("onboarding", "1")]
    assert (done.left_reason, done.last_step, done.last_completed) == ("completed", "call", "call")


def test_a_run_first_seen_at_a_step_waits_there() -> None:
    (only,) = runs(placed([step("9", "wait-3d", "wait", "waited", "check")])).values()
    assert only.waiting_at == "check"
    assert only.entered_at is None


def test_steps_completed_at_the_same_instant_are_ordered_by_their_record() -> None:
    # a branch, a set and a send taken in one go: one instant, consecutive offsets
    events = placed(
        [
            step("1", "check", "branch", "then", "tag"),
            step("1", "tag", "set", "set", "mail"),
            step("1", "mail", "send", "sent", "wait-1d"),
        ]
    )
    backwards = list(reversed(events))
    assert runs(backwards)[run_key("onboarding", "1")].waiting_at == "wait-1d"


LIFE = placed(onboarding())


@settings(max_examples=60, deadline=None)
@given(st.permutations(LIFE), st.lists(st.sampled_from(LIFE), max_size=8))
def test_the_runs_are_the_same_in_any_order_and_with_any_event_seen_again(
    order: list[tuple[JourneyEvent, Seen]], again: list[tuple[JourneyEvent, Seen]]
) -> None:
    assert runs([*order, *again]) == runs(LIFE)


def test_where_each_run_of_the_scenario_waits() -> None:
    found = {r.run: r.waiting_at for r in runs(LIFE).values()}
    assert found == {"1": None, "2": "wait-3d", "3": START, "4": None, "5": None}


def test_steps_are_listed_in_the_order_they_were_first_seen() -> None:
    seen = sightings(LIFE)["onboarding"]
    journey = Journey.of("onboarding", seen.steps, seen.kinds)
    # "bye" was first seen in R5 (version 2), after R1 had gone through every other step
    assert journey.steps == ("welcome", "wait-3d", "check", "call", "bye")
    assert journey.kinds == {
        "welcome": "send",
        "wait-3d": "wait",
        "check": "branch",
        "call": "send",
        "bye": "exit",
    }
    # whichever part of the topic is read first, the minima are the same
    halves = [sightings(LIFE[:7])["onboarding"], sightings(LIFE[7:])["onboarding"]]
    merged = {s: min(h.steps[s] for h in halves if s in h.steps) for s in seen.steps}
    assert merged == seen.steps


def test_a_step_only_named_as_the_next_one_is_listed_after_the_step_that_named_it() -> None:
    seen = sightings(placed([entered("1"), step("1", "welcome", "send", "sent", "wait-3d")]))
    journey = Journey.of("onboarding", seen["onboarding"].steps, seen["onboarding"].kinds)
    assert journey.steps == ("welcome", "wait-3d")
    assert "wait-3d" not in journey.kinds  # not completed yet: its kind is not known


def test_a_run_follows_its_records_not_the_times_its_events_say() -> None:
    # the timer of wait-3d fired late: its step says its due time, before the event that had
    # meanwhile completed the next step (a wait_for) was published
    events = placed(
        [
            step("1", "wait-for-call", "wait_for", "event", "thanks", T + timedelta(hours=2)),
            step("1", "thanks", "send", "sent", "done", T + timedelta(hours=1)),
        ]
    )
    assert runs(events)[run_key("onboarding", "1")].waiting_at == "done"


def test_first_seen_sorts_by_time_then_partition_then_offset() -> None:
    ordered = [
        Seen(0, 99, T),
        Seen(1, 0, T),
        Seen(1, 5, T),
        Seen(0, 0, T + timedelta(microseconds=1)),
        Seen(0, 0, T + timedelta(days=400)),
    ]
    texts = [s.first_seen for s in ordered]
    assert all(a < b for a, b in itertools.pairwise(texts))
    records = [Seen(0, 9, T), Seen(0, 10, T - timedelta(days=1)), Seen(0, 10**12, T)]
    assert all(a.record < b.record for a, b in itertools.pairwise(records))


def test_the_figures_read_back_from_the_counters() -> None:
    counters: dict[str, int] = {}
    for e in onboarding():
        for fact in read("events", e.to_json()).facts[1:]:
            for name, n in fact.counters.items():
                counters[name] = counters.get(name, 0) + n
    all_versions = totals(counters)
    assert (all_versions.entered, all_versions.converted) == (5, 1)
    assert all_versions.left == {
        "completed": 1,
        "converted": 1,
        "exited": 1,
        "disabled": 0,
        "ended_by_update": 0,
    }
    assert all_versions.conversion_rate == 0.2
    versions = by_version(counters)
    assert list(versions) == [1, 2]
    assert (versions[1].entered, versions[2].entered, versions[2].left["exited"]) == (4, 1, 1)
    steps = by_step(counters)
    assert steps["welcome"].completed == 4
    assert steps["welcome"].outcomes["sent"] == 4
    assert (steps["check"].outcomes["then"], steps["check"].outcomes["else"]) == (1, 1)
    assert steps["call"].outcomes["unrouted"] == 1
    assert totals({}).conversion_rate is None
