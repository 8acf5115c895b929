"""How subjects enter a journey and leave it early: event triggers with their filter, segments
(entered when the condition becomes true), dates in the subject's zone, re-entry and the cap on
concurrent runs; the goal (a conversion) and exits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.rules.sdk import Event
from services.rules.testing import RuleHarness
from shared.events.envelope import CanonicalEvent
from shared.events.types import CustomerUpserted
from tests.unit.rules.journeys.builders import (
    ENTERED,
    LEFT,
    T0,
    customer,
    document,
    emitted,
    harness,
    order,
    reasons,
    send,
    steps_of,
)

THREE_STEPS = (
    {"id": "hello", **send()},
    {"id": "pause", "wait": {"for": "7d"}},
    {"id": "nudge", **send()},
)


def tier(h: RuleHarness, value: str, at: datetime) -> None:
    h.send(
        "customer.tier_changed",
        at=at,
        customer_id="C-1",
        tier=value,
        recency_score=3,
        frequency_score=3,
        monetary_score=3,
        changed_at=at.isoformat(),
    )


# -- event triggers --------------------------------------------------------------------------


def test_an_event_trigger_enters_when_its_filter_holds_over_the_event_and_the_subject() -> None:
    h = harness(
        document(
            send(),
            trigger={
                "event": "upkeep.customer.interaction.v1",
                "when": "event.kind == 'order' && subject.region == 'east'",
            },
            reentry={"mode": "every_time"},
        )
    )
    customer(h)  # another type: no entry
    order(h, T0 + timedelta(hours=1))  # region unknown
    customer(h, at=T0 + timedelta(hours=2), region="east")
    order(h, T0 + timedelta(hours=3), n=2, kind="call")
    order(h, T0 + timedelta(hours=4), n=3)
    h.advance(to=T0 + timedelta(days=1))
    (entered,) = emitted(h, ENTERED)
    assert entered["trigger"] == "upkeep.customer.interaction.v1"
    assert entered["entered_at"] == "2026-03-02T05:00:00Z"
    assert [a.due_at for a in h.actions] == [T0 + timedelta(hours=4)]


def test_a_journey_runs_only_for_subjects_of_its_kind() -> None:
    h = harness(document(send(), trigger={"event": "staff.upserted"}))
    h.advance(to=T0 + timedelta(days=1))
    assert emitted(h, ENTERED) == []


def test_an_event_older_than_max_age_enters_no_one() -> None:
    h = harness(document(send(), trigger={"event": "customer.upserted", "max_age": "2d"}))
    customer(h, updated_at=(T0 - timedelta(days=3)).isoformat())  # a backfill of old history
    h.advance(to=T0 + timedelta(days=1))
    assert emitted(h, ENTERED) == []
    customer(h, at=T0 + timedelta(days=1), updated_at=(T0 - timedelta(days=1)).isoformat())
    h.advance(to=T0 + timedelta(days=2))
    (entered,) = emitted(h, ENTERED)
    assert entered["entered_at"] == "2026-03-01T01:00:00Z"  # when its trigger happened


def test_a_run_ignores_events_that_happened_before_it_began() -> None:
    h = harness(
        document(
            *THREE_STEPS,
            trigger={"event": "customer.interaction", "when": "event.kind == 'call'"},
            goal={"event": "customer.interaction", "when": "event.kind == 'order'"},
        )
    )
    customer(h)
    order(h, T0 + timedelta(hours=2), n=1, kind="call")
    order(h, T0 + timedelta(hours=3), n=2, occurred_at=(T0 + timedelta(hours=1)).isoformat())
    h.advance(to=T0 + timedelta(days=10))
    assert steps_of(h.actions) == ["hello", "nudge"]  # the earlier order is no conversion
    assert reasons(h) == ["completed"]


# -- re-entry --------------------------------------------------------------------------------


def entries(reentry: dict[str, Any], times: list[timedelta]) -> list[datetime]:
    """When customer C-1 entered a 30-day journey, its profile arriving at each of ``times``
    after T0."""
    h = harness(
        document(
            {"id": "hello", **send()},
            {"id": "month", "wait": {"for": "30d"}},
            {"id": "bye", **send()},
            reentry=reentry,
        )
    )
    for n, offset in enumerate(times):
        customer(h, at=T0 + offset, name=f"Acme {n}")
    h.advance(to=T0 + timedelta(days=400))
    return [a.due_at for a in h.actions if a.data["journey_step"] == "hello"]


DAYS = [timedelta(days=d) for d in (0, 10, 20, 30, 45)]


def test_once_a_subject_enters_once_ever() -> None:
    assert entries({"mode": "once"}, DAYS) == [T0]


def test_every_time_enters_whenever_no_run_is_live() -> None:
    # day 30: the first run completes at that very moment, before the profile is applied
    assert entries({"mode": "every_time"}, DAYS) == [T0, T0 + timedelta(days=30)]


def test_max_concurrent_lets_several_runs_live_at_once() -> None:
    # three live by day 20; the first completes on day 30, the second on day 40
    assert entries({"mode": "every_time", "max_concurrent": 3}, DAYS) == [T0 + d for d in DAYS]
    assert entries({"mode": "every_time", "max_concurrent": 2}, DAYS) == [
        T0,
        T0 + timedelta(days=10),
        T0 + timedelta(days=30),
        T0 + timedelta(days=45),
    ]


def test_once_per_counts_its_period_from_the_last_entry() -> None:
    assert entries({"mode": "once_per", "period": "15d", "max_concurrent": 5}, DAYS) == [
        T0,
        T0 + timedelta(days=20),
        T0 + timedelta(days=45),
    ]


def test_the_same_trigger_never_starts_two_runs() -> None:
    h = harness(document(send(), reentry={"mode": "every_time", "max_concurrent": 5}))
    customer(h)
    h.send(
        "customer.upserted",
        at=T0 + timedelta(hours=1),
        event_id="crm-42",
        customer_id="C-1",
        name="Acme",
        timezone="UTC",
        owner_id="S-1",
    )
    state = h.states["customer:C-1"]
    rule = h.rules["journeys"]
    runs = len(state.journeys["test-journey"].runs)
    # the same event once more (a copy the state did not recognise, at another position)
    payload = CustomerUpserted(customer_id="C-1", name="Acme", timezone="UTC", owner_id="S-1")
    again = CanonicalEvent.build(
        event_id="crm-42", source="test", payload=payload, time=T0, source_offset="Z"
    )
    list(rule.on_event(Event.of(again, payload), state, h.context(rule, T0 + timedelta(hours=1))))
    assert len(state.journeys["test-journey"].runs) == runs == 2


# -- segments --------------------------------------------------------------------------------


def test_a_segment_is_entered_when_its_condition_becomes_true_not_while_it_stays_true() -> None:
    h = harness(
        document(
            send(),
            trigger={"segment": "subject.tier == 'A'"},
            reentry={"mode": "every_time", "max_concurrent": 5},
        )
    )
    customer(h)  # no tier: outside
    tier(h, "A", T0 + timedelta(days=1))  # false -> true: enters
    order(h, T0 + timedelta(days=2))  # still A: no new run
    customer(h, at=T0 + timedelta(days=3), name="Acme Ltd")
    tier(h, "B", T0 + timedelta(days=4))  # leaves the segment
    order(h, T0 + timedelta(days=5), n=2)
    tier(h, "A", T0 + timedelta(days=6))  # and enters it again
    h.advance(to=T0 + timedelta(days=7))
    assert [e["entered_at"] for e in emitted(h, ENTERED)] == [
        "2026-03-03T01:00:00Z",
        "2026-03-08T01:00:00Z",
    ]
    assert {e["trigger"] for e in emitted(h, ENTERED)} == {"segment"}


def test_a_subject_already_in_the_segment_enters_at_its_next_event() -> None:
    h = harness(document(send(), trigger={"segment": "'vip' in subject.tags"}))
    customer(h, tags=["vip"])  # the journey's first look: it was not known to be inside
    h.advance(to=T0)
    assert len(emitted(h, ENTERED)) == 1


# -- dates -----------------------------------------------------------------------------------


def contract(h: RuleHarness, end: str, at: datetime = T0, **extra: Any) -> None:
    h.send(
        "contract.upserted",
        at=at,
        contract_id=extra.pop("contract_id", "K-1"),
        customer_id="C-1",
        start_date="2025-06-01",
        end_date=end,
        **extra,
    )


def renewal_reminder(**trigger: Any) -> RuleHarness:
    h = harness(
        document(
            {"id": "remind", **send()},
            trigger={"date": "contract.end_date", "offset_days": -30, "at": "09:00", **trigger},
            reentry={"mode": "every_time", "max_concurrent": 5},
        )
    )
    customer(h)
    return h


def test_a_contract_date_trigger_fires_30_days_before_the_end_at_9_local() -> None:
    h = renewal_reminder()
    contract(h, "2026-05-31")
    h.advance(to=datetime(2026, 5, 1, 0, 59, tzinfo=UTC))
    assert h.actions == []
    h.advance(to=datetime(2027, 1, 1, tzinfo=UTC))
    (action,) = h.actions
    assert action.due_at == datetime(2026, 5, 1, 1, tzinfo=UTC)  # 09:00 in Shanghai
    (entered,) = emitted(h, ENTERED)
    assert (entered["trigger"], entered["entered_at"]) == (
        "date:contract.end_date",
        "2026-05-01T01:00:00Z",
    )
    assert reasons(h) == ["completed"]


def test_each_contract_term_fires_once_and_in_the_subjects_own_zone() -> None:
    h = harness(
        document(
            {"id": "remind", **send()},
            trigger={"date": "contract.end_date", "offset_days": -30, "at": "09:00"},
            reentry={"mode": "every_time", "max_concurrent": 5},
        )
    )
    customer(h, timezone="Europe/Berlin")
    contract(h, "2026-05-31")
    contract(h, "2026-09-30", contract_id="K-2")
    contract(h, "2026-05-31", at=T0 + timedelta(days=1))  # the same term again
    h.advance(to=datetime(2027, 1, 1, tzinfo=UTC))
    assert [a.due_at for a in h.actions] == [
        datetime(2026, 5, 1, 7, tzinfo=UTC),  # 09:00 CEST
        datetime(2026, 8, 31, 7, tzinfo=UTC),
    ]


def test_a_date_that_moved_or_a_contract_cancelled_fires_nothing_at_the_old_date() -> None:
    h = renewal_reminder()
    contract(h, "2026-05-31")
    contract(h, "2026-07-31", at=T0 + timedelta(days=1))  # the end moved
    contract(h, "2026-09-30", contract_id="K-2")
    h.send(
        "contract.cancelled",
        at=T0 + timedelta(days=2),
        contract_id="K-2",
        customer_id="C-1",
        cancelled_at=(T0 + timedelta(days=2)).isoformat(),
    )
    h.advance(to=datetime(2027, 1, 1, tzinfo=UTC))
    assert [a.due_at for a in h.actions] == [datetime(2026, 7, 1, 1, tzinfo=UTC)]


def test_a_renewed_contract_fires_before_its_new_end() -> None:
    h = renewal_reminder()
    contract(h, "2026-05-31")
    h.send(
        "contract.renewed",
        at=T0 + timedelta(days=10),
        contract_id="K-1",
        customer_id="C-1",
        new_end_date="2027-05-31",
        renewed_at=(T0 + timedelta(days=10)).isoformat(),
    )
    h.advance(to=datetime(2027, 6, 30, tzinfo=UTC))
    assert [a.due_at for a in h.actions] == [datetime(2027, 5, 1, 1, tzinfo=UTC)]


def test_a_date_triggers_when_filters_at_the_moment_it_fires() -> None:
    h = renewal_reminder(when="subject.tier == 'A'")
    contract(h, "2026-05-31")
    contract(h, "2026-08-31", contract_id="K-2")
    tier(h, "A", datetime(2026, 6, 1, tzinfo=UTC))
    h.advance(to=datetime(2027, 1, 1, tzinfo=UTC))
    assert [a.due_at for a in h.actions] == [datetime(2026, 8, 1, 1, tzinfo=UTC)]


def test_a_birthday_fires_every_year_at_its_local_time() -> None:
    h = harness(
        document(
            {"id": "greet", **send("customer")},
            trigger={"date": "customer.birthday", "at": "10:00"},
            reentry={"mode": "every_time"},
        )
    )
    customer(h, birthday="1990-03-10")
    h.advance(to=datetime(2028, 12, 31, tzinfo=UTC))
    assert [a.due_at for a in h.actions] == [
        datetime(year, 3, 10, 2, tzinfo=UTC) for year in (2026, 2027, 2028)
    ]
    assert len({a.key for a in h.actions}) == 3  # one run per year
    assert [t.due_at for t in h.pending()] == [datetime(2029, 3, 10, 2, tzinfo=UTC)]


def test_a_birthday_on_29_february_is_kept_on_the_28th_in_common_years() -> None:
    h = harness(
        document(
            {"id": "greet", **send("customer")},
            trigger={"date": "customer.birthday"},
            reentry={"mode": "every_time"},
        )
    )
    customer(h, birthday="1988-02-29", timezone="UTC")
    h.advance(to=datetime(2028, 12, 31, tzinfo=UTC))
    assert [a.due_at.date().isoformat() for a in h.actions] == [
        "2027-02-28",
        "2028-02-29",
    ]


# -- goal and exits --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "goal",
    [
        {"event": "customer.interaction", "when": "event.kind == 'order'"},
        {"when": "subject.orders > 0"},  # a condition, checked at every event
    ],
)
def test_meeting_the_goal_converts_the_run_and_its_remaining_sends_never_happen(
    goal: dict[str, Any],
) -> None:
    h = harness(document(*THREE_STEPS, goal=goal))
    customer(h)
    order(h, T0 + timedelta(days=1), kind="call")  # not the goal
    order(h, T0 + timedelta(days=2), n=2)
    h.advance(to=T0 + timedelta(days=30))
    assert steps_of(h.actions) == ["hello"]
    (left,) = emitted(h, LEFT)
    assert (left["reason"], left["left_at"]) == ("converted", "2026-03-04T01:00:00Z")
    assert h.pending() == []


@pytest.mark.parametrize(
    "exit_",
    [
        {"event": "customer.interaction", "when": "event.kind == 'ticket'"},
        {"when": "'blocked' in subject.tags"},
    ],
)
def test_meeting_an_exit_ends_the_run_as_exited(exit_: dict[str, Any]) -> None:
    h = harness(document(*THREE_STEPS, exits=[exit_]))
    customer(h)
    if "event" in exit_:
        order(h, T0 + timedelta(days=2), kind="ticket", ticket_status="opened")
    else:
        customer(h, at=T0 + timedelta(days=2), tags=["blocked"])
    h.advance(to=T0 + timedelta(days=30))
    assert steps_of(h.actions) == ["hello"]
    assert reasons(h) == ["exited"]


def test_the_goal_is_checked_before_a_wait_for_looks_at_the_same_event() -> None:
    h = harness(
        document(
            {"id": "ask", **send()},
            {
                "id": "listen",
                "wait_for": {
                    "event": "customer.interaction",
                    "timeout": "7d",
                    "on_event": "thanks",
                },
            },
            {"id": "stop", "exit": {}},
            {"id": "thanks", **send()},
            goal={"event": "customer.interaction", "when": "event.kind == 'order'"},
        )
    )
    customer(h)
    order(h, T0 + timedelta(days=1))
    h.advance(to=T0 + timedelta(days=30))
    assert steps_of(h.actions) == ["ask"]
    assert reasons(h) == ["converted"]


def test_a_run_that_left_can_be_entered_again_but_only_as_reentry_allows() -> None:
    h = harness(
        document(
            *THREE_STEPS,
            goal={"event": "customer.interaction"},
            reentry={"mode": "every_time"},
        )
    )
    customer(h)
    order(h, T0 + timedelta(days=1))
    customer(h, at=T0 + timedelta(days=2), name="Acme again")
    h.advance(to=T0 + timedelta(days=30))
    assert steps_of(h.actions) == ["hello", "hello", "nudge"]
    assert reasons(h) == ["converted", "completed"]
