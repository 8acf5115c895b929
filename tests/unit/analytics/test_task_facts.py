"""services/analytics/facts.py: what the people side's events on upkeep.events.v1 count for —
assignments, tasks and revisit statuses — under which identity, and what they attribute."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from services.analytics.facts import Fact, read
from services.analytics.people import Revisit
from shared.events.types import TaskCompleted, TaskCreated
from tests.unit.analytics.fact_builders import (
    T,
    by_identity,
    event_identity,
    event_record,
    task_event,
)

# --- assignments ---------------------------------------------------------------------------


def test_an_assignment_counts_by_reason_for_its_owner_and_team_and_gives_the_owner() -> None:
    record = event_record(
        "customer.assigned",
        source="rules",
        customer_id="C-1",
        owner_id="S-1",
        team="north",
        reason="unowned",
        assigned_at=T.isoformat(),
    )
    found = read("events", record)
    identity = "assigned:" + event_identity(source="rules").removeprefix("event:")
    assert by_identity(found.facts)[identity] == Fact(
        identity,
        T,
        {"assignments": 1, "assignments.unowned": 1},
        "customer:C-1",
        {"owner": "S-1", "team": "north"},
    )
    assert found.attribution == ("customer:C-1", {"owner": "S-1"})


def test_an_assignment_from_a_previous_owner_is_a_reassignment() -> None:
    record = event_record(
        "channel.assigned",
        source="rules",
        channel_id="CH-1",
        owner_id="S-2",
        previous_owner_id="S-1",
        reason="owner_inactive",
        assigned_at=T.isoformat(),
    )
    found = read("events", record)
    (fact,) = [f for f in found.facts if f.identity.startswith("assigned:")]
    assert fact.counters == {
        "assignments": 1,
        "assignments.owner_inactive": 1,
        "assignments.reassigned": 1,
    }
    assert fact.dims == {"owner": "S-2"}  # no team said
    assert found.attribution == ("channel:CH-1", {"owner": "S-2"})


# --- tasks ---------------------------------------------------------------------------------


def task_facts(kind: str, **data: Any) -> list[Fact]:
    found = read("events", task_event(kind, **data).to_json())
    events = [f for f in found.facts if f.identity.startswith("event:")]
    assert [f.subject for f in events] == ["customer:C-1"]  # the event itself: its subject's
    return [f for f in found.facts if not f.identity.startswith("event:")]


def test_a_created_task_counts_once_per_task_for_its_owner_team_and_rule() -> None:
    assert task_facts("created") == [
        Fact(
            "task-created:T-1",
            T,
            {"tasks.created": 1},
            "task:T-1",
            {"owner": "S-1", "team": "north", "rule": "followup"},
        )
    ]
    # the same task in another record (another event id) is the same fact
    again = task_facts("created", event_id="e-2")
    assert [f.identity for f in again] == ["task-created:T-1"]


def test_a_completion_counts_once_per_task_attributed_by_the_read_model() -> None:
    (fact,) = task_facts("completed")
    assert fact == Fact("task-completed:T-1", T, {"tasks.completed": 1}, "task:T-1")
    assert [f.identity for f in task_facts("completed", event_id="e-9")] == [fact.identity]


def test_every_snooze_and_reassignment_is_its_own_occurrence() -> None:
    (first,) = task_facts("snoozed")
    (second,) = task_facts("snoozed", event_id="e-2")
    assert first.counters == second.counters == {"tasks.snoozed": 1}
    assert first.identity != second.identity
    (moved,) = task_facts("reassigned")
    assert moved.counters == {"tasks.reassigned": 1}
    assert moved.dims == {"owner": "S-2"}  # the new owner
    assert moved.subject == "task:T-1"


def test_a_task_is_overdue_once_per_due_time() -> None:
    (first,) = task_facts("overdue")
    (copy,) = task_facts("overdue", event_id="e-2")
    later_due = (T + timedelta(days=1)).isoformat()
    (after_snooze,) = task_facts("overdue", event_id="e-3", due_at=later_due)
    assert first.identity == copy.identity
    assert first.identity != after_snooze.identity
    assert first.counters == {"tasks.overdue": 1}
    assert first.dims == {"owner": "S-1"}


@pytest.mark.parametrize("level", [1, 2, 3])
def test_an_escalation_counts_once_per_level(level: int) -> None:
    (fact,) = task_facts("escalated", level=level)
    assert fact.identity == f"task-escalated:T-1:{level}"
    assert fact.counters == {"tasks.escalated": 1, f"tasks.escalated.level_{level}": 1}
    assert fact.dims == {"owner": "S-1"}


def test_a_task_event_changes_the_tasks_read_model_and_attributes_nobody() -> None:
    found = read("events", task_event("created").to_json())
    assert isinstance(found.task, TaskCreated)
    assert found.attribution is None
    assert found.revisit is None
    assert isinstance(read("events", task_event("completed").to_json()).task, TaskCompleted)


# --- revisits ------------------------------------------------------------------------------


def test_a_revisit_status_counts_as_an_event_and_is_kept_as_the_subjects_status() -> None:
    record = event_record(
        "revisit.status_changed",
        source="rules",
        about="channel:CH-1",
        in_cadence=False,
        tier="A",
        every_days=14,
        team="north",
        changed_at=T.isoformat(),
    )
    found = read("events", record)
    assert [f.counters for f in found.facts] == [{"events.revisit.status_changed": 1}]
    assert found.revisit == Revisit(
        about="channel:CH-1",
        in_cadence=False,
        tier="A",
        every_days=14,
        changed_at=T,
        key=event_identity(source="rules").removeprefix("event:"),
        team="north",
    )
    assert found.task is None


def test_a_channel_interaction_counts_as_an_event() -> None:
    record = event_record(
        "channel.interaction", channel_id="CH-1", kind="visit", occurred_at=T.isoformat()
    )
    assert [f.counters for f in read("events", record).facts] == [{"events.channel.interaction": 1}]
