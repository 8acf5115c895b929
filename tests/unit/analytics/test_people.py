"""services/analytics/people.py: the tasks read model folded from task events (the same task in
any order, and with any event seen again), the latest revisit status per subject, compliance,
open tasks by owner and team, and the median time to complete."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.analytics.people import (
    Load,
    Revisit,
    Share,
    Task,
    TaskEvent,
    compliance,
    fold_all,
    latest,
    loads,
    median_hours,
    ms,
)
from tests.unit.analytics.fact_builders import T, task_event

H = timedelta(hours=1)


def ev(kind: str, at: datetime, task_id: str = "T-1", **data: Any) -> TaskEvent:
    payload = task_event(kind, task_id, at=at, **data).payload()
    assert isinstance(payload, TaskEvent)
    return payload


def task(*events: TaskEvent) -> Task:
    return fold_all({}, events)[events[0].task_id]


# a task's life: created at T (due T+2d), overdue at T+2d+1h, escalated twice, snoozed to
# T+5d, reassigned to S-2, completed at T+3d
LIFE = [
    ev("created", T),
    ev("overdue", T + 49 * H, due_at=(T + 48 * H).isoformat()),
    ev("escalated", T + 50 * H, level=1),
    ev("escalated", T + 60 * H, level=2, escalated_to="M-2"),
    ev("snoozed", T + 61 * H, due_at=(T + 120 * H).isoformat()),
    ev("reassigned", T + 62 * H),
    ev("completed", T + 72 * H),
]


def test_a_task_through_its_life() -> None:
    created = task(LIFE[0])
    assert (created.status, created.owner, created.team, created.overdue) == (
        "open",
        "S-1",
        "north",
        False,
    )
    assert created.due_at == T + 48 * H
    overdue = task(*LIFE[:2])
    assert overdue.overdue
    escalated = task(*LIFE[:4])
    assert (escalated.level, escalated.escalated_to) == (2, "M-2")
    snoozed = task(*LIFE[:5])
    assert snoozed.due_at == T + 120 * H
    assert not snoozed.overdue  # the snooze moved the due time past the overdue one
    reassigned = task(*LIFE[:6])
    assert reassigned.owner == "S-2"
    done = task(*LIFE)
    assert (done.status, done.completed_at, done.overdue) == ("done", T + 72 * H, False)
    assert done.time_to_complete == 72 * H
    assert done.team == "north"  # the team it was made for


def test_done_stays_done_and_the_first_completion_counts() -> None:
    done = task(ev("created", T), ev("completed", T + 2 * H), ev("completed", T + H))
    assert done.completed_at == T + H
    assert task(*LIFE, ev("snoozed", T + 100 * H)).status == "done"


def test_a_task_overdue_again_after_its_snooze() -> None:
    again = ev("overdue", T + 121 * H, due_at=(T + 120 * H).isoformat())
    assert task(*LIFE[:6], again).overdue


def test_the_owner_the_rules_knew_gives_way_to_a_reassignment() -> None:
    # rules did not see the reassignment at T+2h: its overdue at T+3h names the old owner
    reassigned = ev("reassigned", T + 2 * H)
    stale = ev("overdue", T + 3 * H, owner_id="S-1")
    assert task(ev("created", T), reassigned, stale).owner == "S-2"
    # an overdue before any created: its owner is all that is known
    assert task(stale).owner == "S-1"
    assert task(stale, ev("created", T)).owner == "S-1"


@settings(max_examples=200, deadline=None)
@given(st.permutations(LIFE), st.lists(st.sampled_from(LIFE), max_size=4))
def test_the_fold_is_order_free_and_idempotent(order: list[TaskEvent], again: list[Any]) -> None:
    assert task(*order, *again) == task(*LIFE)


def test_times_are_kept_to_the_millisecond_as_mongodb_keeps_them() -> None:
    odd = T + timedelta(microseconds=123_456)
    assert ms(odd) == T + timedelta(microseconds=123_000)
    assert task(ev("created", odd)).created_at == ms(odd)


def revisit(about: str, at: datetime, in_cadence: bool, **more: Any) -> Revisit:
    return Revisit(about, in_cadence, more.pop("tier", "A"), 14, at, f"k-{at:%H}", **more)


def test_the_latest_revisit_status_wins_whichever_comes_first() -> None:
    old, new = revisit("channel:CH-1", T, False), revisit("channel:CH-1", T + H, True)
    assert latest(latest(None, old), new) == new
    assert latest(latest(None, new), old) == new
    assert latest(new, new) == new


def test_compliance_by_tier_and_team() -> None:
    statuses = [
        revisit("channel:CH-1", T, True, tier="A", team="north"),
        revisit("channel:CH-2", T, False, tier="A", team="north"),
        revisit("customer:C-1", T, True, tier="B", team="south"),
        revisit("customer:C-2", T, True, tier="B"),
    ]
    overall, tiers, teams = compliance(statuses)
    assert overall == Share(4, 3)
    assert overall.rate == 0.75
    assert tiers == {"A": Share(2, 1), "B": Share(2, 2)}
    assert teams == {"": Share(1, 1), "north": Share(2, 1), "south": Share(1, 1)}
    assert compliance([])[0].rate is None


def test_open_tasks_by_owner_and_team_the_oldest_first() -> None:
    tasks = fold_all(
        {},
        [
            ev("created", T + 2 * H, "T-1", owner_id="S-1", team="north"),
            ev("created", T, "T-2", owner_id="S-2", team="north"),
            ev("created", T + H, "T-3", owner_id="S-1", team="south"),
            ev("overdue", T + 3 * H, "T-3", owner_id="S-1", due_at=(T + 49 * H).isoformat()),
            ev("created", T - H, "T-4", owner_id="S-3"),
            ev("completed", T, "T-4"),
        ],
    ).values()
    assert loads(tasks, "owner") == [Load("S-2", 1, 0, T), Load("S-1", 2, 1, T + H)]
    assert loads(tasks, "team") == [Load("north", 2, 0, T), Load("south", 1, 1, T + H)]


def test_the_median_time_to_complete_in_hours() -> None:
    assert median_hours([H, 3 * H, 2 * H]) == 2.0
    assert median_hours([H, 2 * H]) == 1.5
    assert median_hours([timedelta(minutes=20)]) == 0.33
    assert median_hours([]) is None
