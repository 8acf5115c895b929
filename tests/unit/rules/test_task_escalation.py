"""Task escalation with chosen clocks: reminder in the owner's zone, overdue, the manager chain,
and every way a task stops being chased."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from services.rules.builtin.task_escalation import TaskEscalation, TaskEscalationConfig
from services.rules.sdk import Action
from services.rules.testing import RuleHarness

T0 = datetime(2026, 3, 2, 0, tzinfo=UTC)
DUE = datetime(2026, 3, 4, 9, tzinfo=UTC)  # 10:00 in Berlin, 17:00 in Shanghai


def chain(h: RuleHarness, owner_tz: str = "Europe/Berlin", **owner: Any) -> None:
    """S-1 reports to M-1, who reports to D-1 (who reports to nobody)."""
    for staff_id, manager in (("D-1", None), ("M-1", "D-1")):
        h.send(
            "staff.upserted",
            at=T0,
            staff_id=staff_id,
            name=staff_id,
            timezone="UTC",
            manager_id=manager,
            email=f"{staff_id.lower()}@example.com",
        )
    h.send(
        "staff.upserted",
        at=T0,
        staff_id="S-1",
        name="Sam",
        timezone=owner_tz,
        manager_id="M-1",
        email="s1@example.com",
        **owner,
    )


def task(h: RuleHarness, due: datetime = DUE, at: datetime = T0, **extra: Any) -> None:
    h.send(
        "task.created",
        at=at,
        about="customer:C-1",
        task_id="renewal:K-1:call",
        owner_id="S-1",
        rule="renewal",
        due_at=due.isoformat(),
        created_at=at.isoformat(),
        **extra,
    )


def sent(h: RuleHarness) -> list[tuple[str, str, datetime]]:
    return [(a.template, a.recipient.id, a.due_at) for a in h.actions]


def harness(**config: Any) -> RuleHarness:
    cfg = {"escalate_after_hours": [24, 48], **config}
    return RuleHarness(TaskEscalation(TaskEscalationConfig.model_validate(cfg)))


def test_reminded_the_morning_of_the_due_day_then_overdue_then_two_levels_up() -> None:
    h = harness()
    chain(h)
    task(h)
    h.advance(to=DUE + timedelta(days=10))
    assert sent(h) == [
        ("task_reminder", "S-1", datetime(2026, 3, 4, 7, 30, tzinfo=UTC)),  # 08:30 Berlin
        ("task_overdue", "S-1", DUE),
        ("task_escalated", "M-1", DUE + timedelta(hours=24)),
        ("task_escalated", "D-1", DUE + timedelta(hours=72)),
    ]
    escalated = [e.data for e in h.emitted if e.type == "upkeep.task.escalated.v1"]
    assert [(e["level"], e["escalated_to"]) for e in escalated] == [(1, "M-1"), (2, "D-1")]
    assert [e.type for e in h.emitted].count("upkeep.task.overdue.v1") == 1
    state = h.states["customer:C-1"].task("renewal:K-1:call")
    assert state is not None
    assert state.overdue
    assert state.level == 2


def test_the_reminder_follows_the_owners_zone_across_a_dst_change() -> None:
    h = harness()
    chain(h, owner_tz="America/New_York")
    due = datetime(2026, 3, 9, 18, tzinfo=UTC)  # Monday 14:00 New York, the day after DST began
    task(h, due=due)
    h.advance(to=due)
    assert sent(h)[0] == ("task_reminder", "S-1", datetime(2026, 3, 9, 12, 30, tzinfo=UTC))
    assert h.actions[0].data["due_local"] == "2026-03-09 14:00 (America/New_York)"


def test_no_reminder_when_the_morning_is_not_before_the_due_time() -> None:
    h = harness()
    chain(h)
    task(h, due=datetime(2026, 3, 4, 6, tzinfo=UTC))  # 07:00 Berlin, before 08:30
    h.advance(to=datetime(2026, 3, 4, 7, tzinfo=UTC))
    assert [t for t, _, _ in sent(h)] == ["task_overdue"]


def test_completing_stops_the_escalation_at_once() -> None:
    h = harness()
    chain(h)
    h.send("customer.upserted", at=T0, customer_id="C-1", name="Acme", timezone="UTC")
    task(h)
    h.advance(to=DUE + timedelta(hours=30))  # escalated once
    h.send(
        "task.completed",
        at=DUE + timedelta(hours=30),
        about="customer:C-1",
        task_id="renewal:K-1:call",
        completed_by="S-1",
        completed_at=(DUE + timedelta(hours=30)).isoformat(),
    )
    h.advance(to=DUE + timedelta(days=30))
    assert [t for t, _, _ in sent(h)] == ["task_reminder", "task_overdue", "task_escalated"]
    assert h.pending("task-escalation") == []
    assert h.states["customer:C-1"].tasks == []
    touched = h.states["customer:C-1"].customer
    assert touched is not None
    assert "task_completed" in touched.touches


def test_a_snooze_plans_again_from_the_new_due_time() -> None:
    h = harness()
    chain(h)
    task(h)
    later = DUE + timedelta(days=3)
    h.send(
        "task.snoozed",
        at=T0 + timedelta(hours=1),
        about="customer:C-1",
        task_id="renewal:K-1:call",
        due_at=later.isoformat(),
        snoozed_at=(T0 + timedelta(hours=1)).isoformat(),
    )
    h.advance(to=later + timedelta(hours=1))
    assert [(t, d) for t, _, d in sent(h)] == [
        ("task_reminder", datetime(2026, 3, 7, 7, 30, tzinfo=UTC)),
        ("task_overdue", later),
    ]


def test_a_reassigned_overdue_task_escalates_up_the_new_owners_chain_but_is_overdue_once() -> None:
    h = harness()
    chain(h)
    h.send("staff.upserted", at=T0, staff_id="S-2", name="Kim", timezone="UTC", manager_id="D-1")
    task(h)
    h.advance(to=DUE + timedelta(hours=1))
    h.send(
        "task.reassigned",
        at=DUE + timedelta(hours=2),
        about="customer:C-1",
        task_id="renewal:K-1:call",
        owner_id="S-2",
        previous_owner_id="S-1",
        reassigned_at=(DUE + timedelta(hours=2)).isoformat(),
    )
    h.advance(to=DUE + timedelta(days=10))
    assert [(t, r) for t, r, _ in sent(h)] == [
        ("task_reminder", "S-1"),
        ("task_overdue", "S-1"),
        ("task_escalated", "D-1"),  # S-2's manager, a day after the due time
    ]
    assert [e.type for e in h.emitted].count("upkeep.task.overdue.v1") == 1
    # no second level: D-1 has no manager, which is counted, never silent
    assert ("task-escalation", "customer:C-1", "no_manager") in h.unrouted


def test_the_owners_chat_bot_is_their_preferred_channel() -> None:
    h = harness()
    chain(h, chat_webhook_url="https://oapi.dingtalk.com/robot/send?access_token=x")
    task(h)
    h.advance(to=DUE)
    kinds = {(a.template, a.kind) for a in h.actions}
    assert kinds == {("task_reminder", "chat"), ("task_overdue", "chat")}


def test_a_task_made_by_a_rule_is_chased_through_the_event_the_engine_publishes() -> None:
    """Action.task -> upkeep.task.created.v1 -> task-escalation, as in the service."""

    class MakesATask:
        name = "maker"
        templates: Mapping[str, frozenset[str]] = {}

        def on_event(self, event: Any, subject: Any, ctx: Any) -> Any:
            if subject.customer is not None:
                yield Action.task(
                    "maker",
                    subject,
                    "maker:C-1",
                    "S-1",
                    ctx,
                    template="t",
                    due_at=ctx.now,
                    task_due=DUE,
                    priority="urgent",
                )

        def on_timer(self, timer: Any, subject: Any, ctx: Any) -> Any:
            return []

    h = RuleHarness(MakesATask(), TaskEscalation(TaskEscalationConfig()))
    chain(h)
    h.send("customer.upserted", at=T0, customer_id="C-1", name="Acme", timezone="UTC")
    state = h.states["customer:C-1"].task("maker:C-1")
    assert state is not None
    assert (state.owner_id, state.due_at, state.priority) == ("S-1", DUE, "urgent")
    h.advance(to=DUE)
    assert [a.template for a in h.actions if a.rule == "task-escalation"] == [
        "task_reminder",
        "task_overdue",
    ]
