"""Exactly once at the rule: the same event delivered again, or the same timer occurrence fired
again (its tick did not commit), decides the same and nothing new; an older timer of a run that
has moved on decides nothing."""

from __future__ import annotations

from datetime import timedelta

from services.rules.sdk import Action, CancelTimers, Decision, Emit, Event, SetTimer, Timer
from services.rules.state import SubjectState
from services.rules.testing import RuleHarness
from shared.events.envelope import CanonicalEvent
from shared.events.types import CustomerInteraction, CustomerUpserted
from tests.unit.rules.journeys.builders import (
    T0,
    document,
    harness,
    message,
    rule_of,
    send,
    steps_of,
)

JOURNEY = document(
    {"id": "hello", **send()},
    {"id": "pause", "wait": {"for": "1d"}},
    {
        "id": "listen",
        "wait_for": {"event": "customer.interaction", "timeout": "3d", "on_event": "yes"},
    },
    {"id": "no", "send": {"kind": "task", "to": "owner", "message": message()}},
    {"id": "stop", "exit": {}},
    {"id": "yes", **send("manager")},
    reentry={"mode": "every_time", "max_concurrent": 3},
)
PROFILE = CustomerUpserted(customer_id="C-1", name="Acme", timezone="UTC", owner_id="S-1")


def canonical(payload: CustomerUpserted | CustomerInteraction, event_id: str) -> CanonicalEvent:
    return CanonicalEvent.build(
        event_id=event_id,
        source="crm",
        payload=payload,
        time=payload.event_time() or T0,
        source_offset="Z",
    )


def entered() -> tuple[RuleHarness, CanonicalEvent]:
    h = harness(JOURNEY)
    event = canonical(PROFILE, "crm-1")
    h.deliver(event, at=T0)
    return h, event


def state_of(h: RuleHarness) -> SubjectState:
    return h.states["customer:C-1"]


def new(decisions: list[Decision]) -> list[Decision]:
    """What a decision list adds beyond setting again a timer that exists."""
    return [d for d in decisions if not isinstance(d, SetTimer | CancelTimers)]


def test_the_same_event_delivered_twice_enters_once() -> None:
    h, event = entered()
    timers = h.pending()
    assert h.deliver(event, at=T0 + timedelta(minutes=5)) == []  # the state knows it
    assert h.pending() == timers
    h.advance(to=T0 + timedelta(days=10))
    assert steps_of(h.actions) == ["hello", "no"]
    assert state_of(h).journeys["test-journey"].entries == 1


def test_a_repeat_of_an_entering_event_sets_the_same_timer_and_decides_nothing_new() -> None:
    h, event = entered()
    rule, state = rule_of(h), state_of(h)
    before = state.model_copy(deep=True)
    (timer,) = h.pending()
    decisions = list(
        rule.on_event(Event.of(event, PROFILE, repeat=True), state, h.context(rule, T0))
    )
    assert new(decisions) == []
    (again,) = [d for d in decisions if isinstance(d, SetTimer)]
    assert (again.name, again.due_at, dict(again.data)) == (
        timer.name,
        timer.due_at,
        dict(timer.data),
    )
    assert state == before


def test_a_redelivered_event_that_moved_a_run_moves_it_the_same_way_again() -> None:
    h, _ = entered()
    h.advance(to=T0 + timedelta(days=1, hours=1))  # waiting for an interaction
    call = CustomerInteraction(
        interaction_id="I-1",
        customer_id="C-1",
        kind="call",
        occurred_at=T0 + timedelta(days=1, hours=2),
    )
    event = canonical(call, "crm-2")
    h.deliver(event, at=call.occurred_at)
    (moved,) = h.pending()
    rule, state = rule_of(h), state_of(h)
    for repeat in (False, True):  # not recognised by the state, or recognised as a repeat
        decisions = list(
            rule.on_event(
                Event.of(event, call, repeat=repeat), state, h.context(rule, call.occurred_at)
            )
        )
        assert new(decisions) == []
        assert [(d.name, d.due_at) for d in decisions if isinstance(d, SetTimer)] == [
            (moved.name, moved.due_at)
        ]
    h.advance(to=T0 + timedelta(days=10))
    assert steps_of(h.actions) == ["hello", "yes"]


def fire(h: RuleHarness, timer: Timer, state: SubjectState) -> list[Decision]:
    rule = rule_of(h)
    return list(rule.on_timer(timer, state, h.context(rule, timer.due_at)))


def keys(decisions: list[Decision]) -> list[str]:
    return [d.key for d in decisions if isinstance(d, Action)]


def test_the_same_timer_occurrence_fired_twice_decides_the_same_actions_with_the_same_keys() -> (
    None
):
    h, _ = entered()
    (timer,) = h.pending()
    state = state_of(h)
    untouched = state.model_copy(deep=True)
    first = fire(h, timer, state)
    (run,) = state.journeys["test-journey"].runs
    assert keys(first) == [f"journey:test-journey:v1:customer:C-1:{run}:hello"]
    # the tick did not commit: the timer fires again, on the state it left or on the saved one
    assert fire(h, timer, state) == first
    assert fire(h, timer, untouched.model_copy(deep=True)) == first
    assert [d.type for d in first if isinstance(d, Emit)] == [
        "upkeep.journey.entered.v1",
        "upkeep.journey.step_completed.v1",
    ]


def test_a_timer_that_ended_a_run_fired_again_ends_it_the_same_way() -> None:
    h, _ = entered()
    h.advance(to=T0 + timedelta(days=1))
    (timeout,) = h.pending()  # the wait_for's: it sends the task and exits
    state = state_of(h)
    first = fire(h, timeout, state)
    assert [e.type for e in first if isinstance(e, Emit)][-1] == "upkeep.journey.left.v1"
    again = fire(h, timeout, state)
    assert again == first
    assert len(keys(first)) == 1


def test_an_older_timer_of_a_run_that_moved_on_publishes_again_and_moves_nothing() -> None:
    """A tick that did not commit is redone after later triggers moved the run (its timer
    was never removed): it decides its actions and events again, with the same keys, and
    leaves the run where it is. An occurrence that never moved the run decides nothing."""
    h, _ = entered()
    (entry,) = h.pending()
    first = h.advance(to=T0 + timedelta(days=1))  # the entry timer, then the wait's, fired
    state = state_of(h)
    before = state.model_copy(deep=True)
    again = fire(h, entry, state)
    assert keys(again) == [a.key for a in first if a.key.endswith(":hello")]
    assert not [d for d in again if isinstance(d, SetTimer | CancelTimers)]
    assert state == before
    (pause,) = h.pending()
    stale = Timer(
        entry.rule, entry.subject, entry.name, entry.due_at - timedelta(hours=1), entry.data
    )
    assert fire(h, stale, state) == []
    assert state == before
    assert pause.due_at == T0 + timedelta(days=4)


def test_a_timer_of_a_run_long_gone_decides_nothing() -> None:
    h, _ = entered()
    (entry,) = h.pending()
    h.advance(to=T0 + timedelta(days=30))  # completed an age ago: its tombstone is gone too
    h.deliver(
        canonical(PROFILE.model_copy(update={"name": "Acme Ltd"}), "crm-9"),
        at=T0 + timedelta(days=30),
    )
    assert fire(h, entry, state_of(h)) == []
    assert fire(h, entry, SubjectState(id="customer:C-1")) == []
