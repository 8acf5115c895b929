"""Revisits with chosen clocks: per tier and kind of subject, restarted by touches, in the
subject's own zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.rules.builtin.revisit import Revisit
from services.rules.testing import RuleHarness

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)


def customer(h: RuleHarness, tier: str | None = "A", at: datetime = T0, **extra: Any) -> None:
    fields = {"name": "Acme", "timezone": "Asia/Shanghai", "owner_id": "S-1", **extra}
    h.send("customer.upserted", at=at, customer_id="C-1", **fields)
    if tier is not None:
        h.send(
            "customer.tier_changed",
            at=at,
            customer_id="C-1",
            tier=tier,
            recency_score=3,
            frequency_score=3,
            monetary_score=3,
            changed_at=at.isoformat(),
        )


def touch(h: RuleHarness, at: datetime, kind: str = "visit", n: int = 1) -> None:
    h.send(
        "customer.interaction",
        at=at,
        interaction_id=f"I-{n}",
        customer_id="C-1",
        kind=kind,
        occurred_at=at.isoformat(),
    )


def statuses(h: RuleHarness) -> list[tuple[bool, str]]:
    return [
        (e.data["in_cadence"], e.data["tier"])
        for e in h.emitted
        if e.type == "upkeep.revisit.status_changed.v1"
    ]


def test_an_a_tier_customer_untouched_for_30_days_gets_a_revisit_task_for_its_owner() -> None:
    h = RuleHarness(Revisit())
    h.send(
        "staff.upserted", at=T0, staff_id="S-1", name="Sam", timezone="Asia/Shanghai", team="east"
    )
    customer(h)
    h.advance(to=T0 + timedelta(days=31))
    (task,) = h.actions
    assert (task.kind, task.recipient.id, task.template) == ("task", "S-1", "revisit_task")
    assert task.due_at == datetime(2026, 2, 4, 2, tzinfo=UTC)  # 10:00 in Shanghai, day 30
    assert task.task_spec is not None
    assert task.task_spec.due_at == task.due_at + timedelta(days=3)
    assert task.task_spec.priority == "high"
    assert task.data["every_days"] == 30
    assert task.data["last_touch_date"] is None
    assert statuses(h) == [(True, "C"), (True, "A"), (False, "A")]
    (open_task,) = h.states["customer:C-1"].tasks  # the task came back as task.created
    assert open_task.task_id == task.key
    h.advance(to=T0 + timedelta(days=61))  # still untouched: again a cadence later
    assert [a.due_at.date().isoformat() for a in h.actions] == ["2026-02-04", "2026-03-06"]


def test_every_touch_restarts_the_clock_and_a_touch_after_a_lapse_is_in_cadence_again() -> None:
    h = RuleHarness(Revisit())
    customer(h)
    touch(h, T0 + timedelta(days=20))
    h.advance(to=T0 + timedelta(days=45))
    assert h.actions == []
    h.advance(to=T0 + timedelta(days=51))
    assert len(h.actions) == 1  # 30 days after the visit
    touch(h, T0 + timedelta(days=52), kind="call", n=2)
    assert statuses(h)[-2:] == [(False, "A"), (True, "A")]
    h.advance(to=T0 + timedelta(days=80))
    assert len(h.actions) == 1


def test_a_completed_task_is_a_touch() -> None:
    h = RuleHarness(Revisit())
    customer(h)
    done = T0 + timedelta(days=25)
    h.send(
        "task.created",
        at=T0,
        about="customer:C-1",
        task_id="t-1",
        owner_id="S-1",
        rule="manual",
        due_at=done.isoformat(),
        created_at=T0.isoformat(),
    )
    h.send(
        "task.completed",
        at=done,
        about="customer:C-1",
        task_id="t-1",
        completed_at=done.isoformat(),
    )
    h.advance(to=T0 + timedelta(days=54))
    assert h.actions == []
    h.advance(to=T0 + timedelta(days=56))
    assert len(h.actions) == 1


def test_b_and_c_customers_get_a_check_in_email_and_without_an_address_it_is_counted() -> None:
    h = RuleHarness(Revisit())
    customer(h, tier="B", email="buyer@example.com")
    h.advance(to=T0 + timedelta(days=61))
    (mail,) = h.actions
    assert (mail.kind, mail.recipient.kind, mail.template) == (
        "email",
        "customer",
        "revisit_checkin",
    )
    assert mail.priority == "marketing"

    h = RuleHarness(Revisit())
    customer(h, tier=None)  # untiered counts as C: 120 days, and no e-mail address
    h.advance(to=T0 + timedelta(days=121))
    assert h.actions == []
    assert h.unrouted == [("revisit", "customer:C-1", "no_recipient")]


def test_a_tier_change_to_a_shorter_cadence_that_has_run_out_acts_at_once() -> None:
    h = RuleHarness(Revisit())
    h.send("staff.upserted", at=T0, staff_id="S-1", name="Sam", timezone="UTC")
    customer(h, tier="C")
    later = T0 + timedelta(days=50)
    h.send(
        "customer.tier_changed",
        at=later,
        customer_id="C-1",
        tier="A",
        previous="C",
        recency_score=3,
        frequency_score=3,
        monetary_score=3,
        changed_at=later.isoformat(),
    )
    h.advance(to=later)
    assert [(a.template, a.due_at) for a in h.actions] == [("revisit_task", later)]


def test_the_revisit_moment_keeps_its_local_time_across_a_dst_change() -> None:
    h = RuleHarness(Revisit())
    start = datetime(2026, 2, 20, 15, tzinfo=UTC)  # 10:00 in New York, winter time
    h.send(
        "customer.upserted",
        at=start,
        customer_id="C-1",
        name="Acme",
        timezone="America/New_York",
        owner_id="S-1",
    )
    h.send(
        "customer.tier_changed",
        at=start,
        customer_id="C-1",
        tier="A",
        recency_score=3,
        frequency_score=3,
        monetary_score=3,
        changed_at=start.isoformat(),
    )
    h.advance(to=start + timedelta(days=31))
    (task,) = h.actions
    assert task.due_at == datetime(2026, 3, 22, 14, tzinfo=UTC)  # 10:00 EDT, 30 days later


def test_an_a_tier_customer_without_an_owner_is_counted() -> None:
    h = RuleHarness(Revisit())
    customer(h, owner_id=None)
    h.advance(to=T0 + timedelta(days=31))
    assert h.actions == []
    assert h.unrouted == [("revisit", "customer:C-1", "no_owner")]


def test_a_distributor_gets_a_monthly_statement_of_what_it_ordered() -> None:
    h = RuleHarness(Revisit())
    h.send(
        "channel.upserted",
        at=T0,
        channel_id="CH-1",
        name="Hangzhou Dealer",
        timezone="Asia/Shanghai",
        locale="zh-CN",
        email="orders@dealer.example",
    )
    h.send(
        "channel.tier_changed",
        at=T0,
        channel_id="CH-1",
        tier="B",
        value="30000",
        changed_at=T0.isoformat(),
    )
    for n, day in enumerate((3, 10, 10)):  # the orders are touches: the clock restarts
        at = T0 + timedelta(days=day, hours=n)
        h.send(
            "channel.order",
            at=at,
            order_id=f"O-{n}",
            channel_id="CH-1",
            amount="1250.50",
            currency="CNY",
            occurred_at=at.isoformat(),
        )
    h.advance(to=T0 + timedelta(days=41))
    (mail,) = h.actions
    assert (mail.recipient.kind, mail.recipient.id, mail.template, mail.locale) == (
        "channel",
        "CH-1",
        "channel_checkin",
        "zh-CN",
    )
    assert mail.data["orders"] == 2  # the one on 8 January is before the period
    assert mail.data["order_value"] == "2501.00"
    assert mail.data["last_order_date"] == "2026-01-15"
    assert (mail.data["period_start"], mail.data["period_end"]) == ("2026-01-15", "2026-02-13")


def test_an_inactive_channel_is_not_revisited() -> None:
    h = RuleHarness(Revisit())
    h.send(
        "channel.upserted",
        at=T0,
        channel_id="CH-1",
        name="Gone",
        timezone="UTC",
        email="x@dealer.example",
    )
    h.send(
        "channel.upserted",
        at=T0 + timedelta(hours=1),
        channel_id="CH-1",
        name="Gone",
        timezone="UTC",
        active=False,
    )
    h.advance(to=T0 + timedelta(days=200))
    assert h.actions == []
    assert h.pending("revisit") == []


def test_a_lapsed_customer_that_gets_an_owner_gets_its_revisit_task_at_once() -> None:
    from services.rules.builtin.assignment import Assignment, AssignmentConfig

    h = RuleHarness(Revisit(), Assignment(AssignmentConfig(notify_owner=False)))
    customer(h, owner_id=None)  # A-tier, and nobody to give it to yet
    touch(h, T0 - timedelta(days=40))  # an old visit: out of its 30 days at once
    h.advance(to=T0 + timedelta(minutes=1))
    assert ("revisit", "customer:C-1", "no_owner") in h.unrouted
    h.send(
        "staff.upserted", at=T0 + timedelta(minutes=2), staff_id="S-9", name="Kim", timezone="UTC"
    )
    h.advance(to=T0 + timedelta(minutes=40))  # assignment looks again after 30 minutes
    assert h.states["customer:C-1"].owner_id == "S-9"
    (task,) = [a for a in h.actions if a.rule == "revisit"]
    assert task.recipient.id == "S-9"
