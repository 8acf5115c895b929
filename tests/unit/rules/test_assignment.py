"""Assignment with chosen clocks: territories, policies, skipped staff, reclaim, replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.rules.builtin.assignment import Assignment, AssignmentConfig
from services.rules.testing import RuleHarness

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)


def staff(h: RuleHarness, staff_id: str, team: str = "east", **extra: Any) -> None:
    h.send(
        "staff.upserted",
        at=T0,
        staff_id=staff_id,
        name=f"Rep {staff_id}",
        timezone="Asia/Shanghai",
        team=team,
        **extra,
    )


def customer(h: RuleHarness, customer_id: str, at: datetime = T0, **extra: Any) -> None:
    h.send(
        "customer.upserted",
        at=at,
        customer_id=customer_id,
        name=f"Customer {customer_id}",
        timezone="Asia/Shanghai",
        **extra,
    )


def owner_of(h: RuleHarness, subject: str) -> str | None:
    return h.states[subject].owner_id


def assignments(h: RuleHarness) -> list[tuple[str, str, str | None, str]]:
    return [
        (
            e.data.get("customer_id") or e.data["channel_id"],
            e.data["owner_id"],
            e.data["previous_owner_id"],
            e.data["reason"],
        )
        for e in h.emitted
        if e.type.endswith(".assigned.v1")
    ]


def make(**config: Any) -> RuleHarness:
    cfg = {"territories": [{"region": "East", "team": "east"}, {"tag": "ka", "team": "ka"}]}
    return RuleHarness(Assignment(AssignmentConfig.model_validate({**cfg, **config})))


def test_an_unowned_customer_gets_the_least_loaded_member_of_its_territory() -> None:
    h = make()
    staff(h, "S-1")
    staff(h, "S-2")
    staff(h, "S-9", team="west")
    customer(h, "C-0", owner_id="S-1")  # S-1 carries one already
    customer(h, "C-1", region="East")
    assert owner_of(h, "customer:C-1") == "S-2"
    assert assignments(h) == [("C-1", "S-2", None, "unowned")]
    notice = [a for a in h.actions if a.template == "assignment_notice"]
    assert [(a.recipient.id, a.data["reason"]) for a in notice] == [("S-2", "unowned")]


def test_least_loaded_counts_open_tasks_and_breaks_ties_by_id() -> None:
    h = make()
    staff(h, "S-1")
    staff(h, "S-2")
    customer(h, "C-1", region="East")
    customer(h, "C-2", region="East")
    customer(h, "C-3", region="East")
    assert [owner_of(h, f"customer:C-{n}") for n in (1, 2, 3)] == ["S-1", "S-2", "S-1"]
    h.send(
        "task.created",
        at=T0,
        about="customer:C-2",
        task_id="t-1",
        owner_id="S-2",
        rule="manual",
        due_at=(T0 + timedelta(days=1)).isoformat(),
        created_at=T0.isoformat(),
    )
    h.send(
        "task.created",
        at=T0,
        about="customer:C-2",
        task_id="t-2",
        owner_id="S-2",
        rule="manual",
        due_at=(T0 + timedelta(days=1)).isoformat(),
        created_at=T0.isoformat(),
    )
    customer(h, "C-4", region="East")  # S-1: 2 owned; S-2: 1 owned + 2 open tasks
    assert owner_of(h, "customer:C-4") == "S-1"


def test_round_robin_goes_around_the_team_skipping_inactive_away_and_full_members() -> None:
    h = make(policy="round_robin")
    staff(h, "S-1")
    staff(h, "S-2", active=False)
    staff(h, "S-3", away_until="2026-03-05")  # away today (local date), back after the 5th
    staff(h, "S-4", capacity=1)
    staff(h, "S-5")
    for n in range(1, 6):
        customer(h, f"C-{n}", region="East")
    owners = [owner_of(h, f"customer:C-{n}") for n in range(1, 6)]
    assert owners == ["S-1", "S-4", "S-5", "S-1", "S-5"]  # S-4 is full after one
    back = T0 + timedelta(days=4)  # 6 March: S-3 is back
    customer(h, "C-6", at=back, region="East")
    customer(h, "C-7", at=back, region="East")
    assert [owner_of(h, "customer:C-6"), owner_of(h, "customer:C-7")] == ["S-1", "S-3"]


def test_a_tag_picks_its_team_and_no_territory_falls_back_to_the_default_team() -> None:
    h = make(default_team="pool")
    staff(h, "S-1")
    staff(h, "K-1", team="ka")
    staff(h, "P-1", team="pool")
    customer(h, "C-1", tags=["ka"])
    customer(h, "C-2", region="Nowhere")
    assert owner_of(h, "customer:C-1") == "K-1"
    assert owner_of(h, "customer:C-2") == "P-1"


def test_a_team_with_nobody_available_is_counted_never_silent() -> None:
    h = make()
    staff(h, "S-1", active=False)
    customer(h, "C-1", region="East")
    assert owner_of(h, "customer:C-1") is None
    assert ("assignment", "customer:C-1", "no_staff") in h.unrouted


def test_an_owner_who_leaves_has_their_customers_reassigned_at_the_next_review() -> None:
    h = make()
    staff(h, "S-1")
    staff(h, "S-2")
    customer(h, "C-1", region="East", owner_id="S-1")
    assert assignments(h) == []
    h.send(
        "staff.upserted",
        at=T0 + timedelta(hours=2),
        staff_id="S-1",
        name="Rep S-1",
        timezone="Asia/Shanghai",
        team="east",
        active=False,
    )
    h.advance(to=T0 + timedelta(days=1, hours=2))  # the daily review, 08:00 Shanghai
    assert assignments(h) == [("C-1", "S-2", "S-1", "owner_inactive")]
    assert owner_of(h, "customer:C-1") == "S-2"


def test_a_profile_without_an_owner_keeps_the_assigned_one_but_a_crm_owner_wins() -> None:
    h = make()
    staff(h, "S-1")
    staff(h, "S-2")
    customer(h, "C-1", region="East")
    assert owner_of(h, "customer:C-1") == "S-1"
    customer(h, "C-1", at=T0 + timedelta(hours=1), region="East", email="c@example.com")
    assert owner_of(h, "customer:C-1") == "S-1"
    customer(h, "C-1", at=T0 + timedelta(hours=2), region="East", owner_id="S-2")
    assert owner_of(h, "customer:C-1") == "S-2"
    assert len(assignments(h)) == 1


def test_channels_are_assigned_too() -> None:
    h = make()
    staff(h, "S-1")
    h.send(
        "channel.upserted",
        at=T0,
        channel_id="CH-1",
        name="Dealer",
        timezone="Asia/Shanghai",
        region="East",
    )
    assert owner_of(h, "channel:CH-1") == "S-1"
    assert assignments(h) == [("CH-1", "S-1", None, "unowned")]


def test_no_touch_for_reclaim_after_days_warns_then_returns_the_customer_to_the_pool() -> None:
    h = make(reclaim_after_days=30, warn_days=5)
    staff(h, "S-1")
    staff(h, "S-2")
    customer(h, "C-1", region="East", owner_id="S-1")
    h.advance(to=T0 + timedelta(days=24))
    assert [a.template for a in h.actions if a.recipient.id == "S-1"] == []
    h.advance(to=T0 + timedelta(days=26))  # 5 days before 1 April, 08:00 Shanghai
    warns = [a for a in h.actions if a.template == "assignment_reclaim_warning"]
    assert [(a.recipient.id, a.data["reclaim_date"]) for a in warns] == [("S-1", "2026-04-01")]
    h.advance(to=T0 + timedelta(days=31))
    assert assignments(h) == [("C-1", "S-2", "S-1", "reclaimed")]


def test_a_touch_restarts_the_reclaim_clock() -> None:
    h = make(reclaim_after_days=30, warn_days=5)
    staff(h, "S-1")
    staff(h, "S-2")
    customer(h, "C-1", region="East", owner_id="S-1")
    visit = T0 + timedelta(days=20)
    h.send(
        "customer.interaction",
        at=visit,
        interaction_id="I-1",
        customer_id="C-1",
        kind="visit",
        occurred_at=visit.isoformat(),
    )
    h.advance(to=T0 + timedelta(days=45))
    assert assignments(h) == []
    assert [a.data["reclaim_date"] for a in h.actions] == ["2026-04-21"]  # warned, not reclaimed
    h.advance(to=T0 + timedelta(days=52))
    assert assignments(h) == [("C-1", "S-2", "S-1", "reclaimed")]


def history(h: RuleHarness) -> None:
    for n in range(1, 4):
        staff(h, f"S-{n}")
    for n in range(12):
        customer(h, f"C-{n}", at=T0 + timedelta(minutes=n), region="East")
        if n % 4 == 0:
            h.send(
                "staff.upserted",
                at=T0 + timedelta(minutes=n, seconds=30),
                staff_id=f"S-{n // 4 + 1}",
                name="x",
                timezone="UTC",
                team="east",
                away_until="2026-03-03",
            )


@pytest.mark.parametrize("policy", ["least_loaded", "round_robin"])
def test_the_same_history_assigns_the_same_owners(policy: str) -> None:
    first, again = make(policy=policy), make(policy=policy)
    history(first)
    history(again)
    owners = {s: st.owner_id for s, st in first.states.items() if s.startswith("customer:")}
    assert owners == {s: st.owner_id for s, st in again.states.items() if s.startswith("customer:")}
    assert len(set(owners.values())) > 1
    assert [a.key for a in first.actions] == [a.key for a in again.actions]
