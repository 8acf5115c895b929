"""The rule contract, checked over every registered rule; the registry; state idempotence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.rules.registry import BUILTIN, load_rules, read_config
from services.rules.sdk import Action, CancelTimers, Emit, Rule, SetTimer
from services.rules.state import SubjectState, apply
from services.rules.testing import RuleHarness
from shared.events.envelope import CanonicalEvent
from shared.events.types import EVENT_TYPES

T0 = datetime(2026, 3, 1, 8, tzinfo=UTC)
HISTORY: list[tuple[str, dict[str, Any]]] = [
    (
        "staff.upserted",
        {"staff_id": "S-1", "name": "Owner", "timezone": "Europe/Berlin", "manager_id": "S-2"},
    ),
    (
        "customer.upserted",
        {
            "customer_id": "C-1",
            "name": "Acme",
            "timezone": "Europe/Berlin",
            "email": "a@example.com",
            "birthday": "1985-03-20",
            "customer_since": "2021-03-10",
            "owner_id": "S-1",
        },
    ),
    (
        "contract.upserted",
        {
            "contract_id": "K-1",
            "customer_id": "C-1",
            "start_date": "2025-04-01",
            "end_date": "2026-03-31",
            "value": "900",
            "currency": "EUR",
        },
    ),
    (
        "customer.interaction",
        {
            "interaction_id": "I-1",
            "customer_id": "C-1",
            "kind": "order",
            "occurred_at": "2026-03-02T10:00:00+01:00",
            "amount": "50",
            "currency": "EUR",
        },
    ),
    (
        "customer.interaction",
        {
            "interaction_id": "I-2",
            "customer_id": "C-1",
            "kind": "ticket",
            "ticket_status": "closed",
            "occurred_at": "2026-03-03T10:00:00Z",
        },
    ),
    (
        "channel.upserted",
        {"channel_id": "CH-1", "name": "East", "timezone": "Asia/Shanghai", "manager_id": "S-1"},
    ),
    (
        "channel.order",
        {
            "channel_id": "CH-1",
            "order_id": "O-1",
            "amount": "10",
            "currency": "CNY",
            "occurred_at": "2026-03-04T10:00:00+08:00",
        },
    ),
    (
        "contract.renewed",
        {
            "contract_id": "K-1",
            "customer_id": "C-1",
            "new_end_date": "2027-03-31",
            "renewed_at": "2026-03-05T10:00:00Z",
        },
    ),
    (
        "contract.cancelled",
        {"contract_id": "K-1", "customer_id": "C-1", "cancelled_at": "2026-03-06T10:00:00Z"},
    ),
    (
        "customer.tier_changed",
        {
            "customer_id": "C-1",
            "tier": "B",
            "recency_score": 3,
            "frequency_score": 1,
            "monetary_score": 1,
            "changed_at": "2026-03-07T00:00:00Z",
        },
    ),
    (
        "customer.churn_risk_changed",
        {"customer_id": "C-1", "at_risk": True, "risk": 0.8, "changed_at": "2026-03-08T00:00:00Z"},
    ),
    (
        "channel.tier_changed",
        {"channel_id": "D-1", "tier": "B", "value": "25000", "changed_at": "2026-03-09T00:00:00Z"},
    ),
    (
        "channel.interaction",
        {"channel_id": "CH-1", "kind": "visit", "occurred_at": "2026-03-10T09:00:00+08:00"},
    ),
    (
        "customer.assigned",
        {
            "customer_id": "C-2",
            "owner_id": "S-1",
            "reason": "unowned",
            "assigned_at": "2026-03-11T00:00:00Z",
        },
    ),
    (
        "channel.assigned",
        {
            "channel_id": "CH-2",
            "owner_id": "S-1",
            "reason": "unowned",
            "assigned_at": "2026-03-12T00:00:00Z",
        },
    ),
    (
        "task.created",
        {
            "about": "customer:C-1",
            "task_id": "manual:C-1:call",
            "owner_id": "S-1",
            "rule": "manual",
            "due_at": "2026-03-14T09:00:00Z",
            "created_at": "2026-03-13T00:00:00Z",
        },
    ),
    (
        "task.snoozed",
        {
            "about": "customer:C-1",
            "task_id": "manual:C-1:call",
            "due_at": "2026-03-16T09:00:00Z",
            "snoozed_at": "2026-03-14T00:00:00Z",
        },
    ),
    (
        "task.reassigned",
        {
            "about": "customer:C-1",
            "task_id": "manual:C-1:call",
            "owner_id": "S-2",
            "reassigned_at": "2026-03-15T00:00:00Z",
        },
    ),
    (
        "task.overdue",
        {
            "about": "customer:C-1",
            "task_id": "manual:C-1:call",
            "owner_id": "S-2",
            "due_at": "2026-03-16T09:00:00Z",
            "overdue_at": "2026-03-16T09:00:00Z",
        },
    ),
    (
        "task.escalated",
        {
            "about": "customer:C-1",
            "task_id": "manual:C-1:call",
            "owner_id": "S-2",
            "level": 1,
            "escalated_to": "S-3",
            "escalated_at": "2026-03-17T09:00:00Z",
        },
    ),
    (
        "task.completed",
        {
            "about": "customer:C-1",
            "task_id": "manual:C-1:call",
            "completed_by": "S-2",
            "completed_at": "2026-03-18T09:00:00Z",
        },
    ),
    (
        "revisit.status_changed",
        {
            "about": "channel:CH-1",
            "in_cadence": True,
            "tier": "B",
            "every_days": 60,
            "changed_at": "2026-03-19T00:00:00Z",
        },
    ),
    (
        "subject.labelled",
        {
            "about": "customer:C-1",
            "add_tags": ["welcomed"],
            "attributes": {"stage": "onboarded"},
            "labelled_by": "journey:welcome",
            "labelled_at": "2026-03-20T00:00:00Z",
        },
    ),
    (
        "journey.entered",
        {
            "about": "customer:C-1",
            "journey": "welcome",
            "version": 1,
            "run": "0a1b2c3d4e5f6a7b",
            "trigger": "upkeep.customer.upserted.v1",
            "entered_at": "2026-03-21T00:00:00Z",
        },
    ),
    (
        "journey.step_completed",
        {
            "about": "customer:C-1",
            "journey": "welcome",
            "version": 1,
            "run": "0a1b2c3d4e5f6a7b",
            "step": "hello",
            "kind": "send",
            "outcome": "sent",
            "action_key": "journey:welcome:v1:customer:C-1:0a1b2c3d4e5f6a7b:hello",
            "completed_at": "2026-03-21T00:00:00Z",
        },
    ),
    (
        "journey.left",
        {
            "about": "customer:C-1",
            "journey": "welcome",
            "version": 1,
            "run": "0a1b2c3d4e5f6a7b",
            "reason": "completed",
            "last_step": "hello",
            "left_at": "2026-03-21T00:00:00Z",
        },
    ),
    (
        "cost.recorded",
        {
            "about": "customer:C-1",
            "cost_id": "K-1",
            "category": "gift",
            "amount": "120.00",
            "currency": "EUR",
            "incurred_on": "2026-03-22",
            "recorded_at": "2026-03-22T00:00:00Z",
        },
    ),
    (
        "budget.set",
        {
            "budget_id": "B-1",
            "scope": "owner",
            "scope_id": "S-1",
            "period": "month",
            "period_id": "2026-03",
            "amount": "500",
            "currency": "EUR",
            "set_at": "2026-03-01T00:00:00Z",
        },
    ),
]
ALL_RULES = load_rules({})


def run(rule: Rule) -> RuleHarness:
    h = RuleHarness(rule)
    for n, (type_name, data) in enumerate(HISTORY):
        h.send(type_name, at=T0 + timedelta(days=n), event_id=f"e-{n}", **data)
    h.advance(to=T0 + timedelta(days=800))
    return h


def test_the_history_covers_every_event_type() -> None:
    assert {f"upkeep.{t}.v1" for t, _ in HISTORY} == set(EVENT_TYPES)


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.name)
def test_every_rule_satisfies_the_contract(rule: Rule) -> None:
    assert isinstance(rule, Rule)
    assert rule.name in BUILTIN
    # a second instance of the same rule, built from the registry as the service builds it
    first, again = run(rule), run(next(r for r in load_rules({}) if r.name == rule.name))
    # deterministic: the same history at the same times gives the same actions and keys
    assert [a.key for a in first.actions] == [a.key for a in again.actions]
    keys = [a.key for a in first.actions]
    assert len(keys) == len(set(keys)), "an occurrence produced two actions"
    for action in first.actions:
        assert isinstance(action, Action)
        assert action.rule == rule.name
        assert action.key.startswith(rule.name)
        assert action.due_at.tzinfo is not None


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.name)
def test_every_rule_tolerates_any_event_on_an_empty_subject(rule: Rule) -> None:
    h = RuleHarness(rule)
    for type_name, data in HISTORY:
        h.states.clear()
        h.send(type_name, at=T0, **data)
    for timer in h.pending():
        assert timer.due_at > T0
    decisions = (
        list(rule.on_timer(h.pending()[0], SubjectState(id="customer:gone"), h.context(rule, T0)))
        if h.pending()
        else []
    )
    assert all(isinstance(d, Action | SetTimer | CancelTimers | Emit) for d in decisions)


def test_redelivered_events_change_no_state() -> None:
    state = SubjectState(id="customer:C-1")
    events = []
    for n, (type_name, data) in enumerate(HISTORY[1:5]):
        from shared.events.types import resolve_type

        payload = resolve_type(type_name).model_validate(data)  # type: ignore[union-attr]
        events.append(
            CanonicalEvent.build(
                event_id=f"e-{n}", source="t", payload=payload, time=T0, source_offset="Z"
            )
        )
    for event in events:
        state, changed = apply(state, event)
        assert changed
    for event in events:
        again, changed = apply(state, event)
        assert not changed
        assert again == state
    assert state.customer is not None
    assert (state.customer.orders, state.customer.interactions) == (1, {"order": 1, "ticket": 1})


def test_an_older_profile_snapshot_does_not_overwrite_a_newer_one() -> None:
    h = RuleHarness()
    h.send(
        "customer.upserted",
        at=T0,
        customer_id="C-1",
        name="New",
        timezone="UTC",
        updated_at="2026-03-02T00:00:00Z",
    )
    h.send(
        "customer.upserted",
        at=T0,
        customer_id="C-1",
        name="Old",
        timezone="UTC",
        updated_at="2026-03-01T00:00:00Z",
    )
    assert h.states["customer:C-1"].customer.name == "New"  # type: ignore[union-attr]


def test_rules_can_be_switched_off_or_selected(tmp_path: Path) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text("renewal:\n  enabled: false\nbirthday:\n  feb29: mar1\n")
    loaded = [r.name for r in load_rules(read_config(config))]
    assert "renewal" not in loaded
    assert set(loaded) == set(BUILTIN) - {"renewal"}
    assert [r.name for r in load_rules({}, enabled={"renewal"})] == ["renewal"]
    with pytest.raises(ValueError, match="unknown rules"):
        load_rules({}, enabled={"no-such-rule"})
    config.write_text("birthday:\n  feb_29: mar1\n")  # a typo is refused, not ignored
    with pytest.raises(ValueError, match="feb_29"):
        load_rules(read_config(config))


def test_a_replay_from_offset_zero_changes_nothing_beyond_the_remembered_ids() -> None:
    from services.rules.state import REMEMBERED_EVENTS
    from shared.events.types import resolve_type

    orders = REMEMBERED_EVENTS + 44
    model = resolve_type("customer.interaction")
    assert model is not None
    events = [
        CanonicalEvent.build(
            event_id=f"o-{n}",
            source="t",
            payload=model.model_validate(
                {
                    "interaction_id": f"O-{n}",
                    "customer_id": "C-1",
                    "kind": "order",
                    "occurred_at": T0.isoformat(),
                }
            ),
            time=T0,
            source_offset="Z",
        )
        for n in range(orders)
    ]
    state = SubjectState(id="customer:C-1")
    for offset, event in enumerate(events):
        state, _ = apply(state, event, position=(4, offset))
    assert state.customer is not None
    assert state.customer.orders == orders
    assert state.position == (4, orders - 1)

    replayed = state
    for offset, event in enumerate(events):  # the whole partition again, from offset 0
        replayed, changed = apply(replayed, event, position=(4, offset))
        assert not changed
    assert replayed == state
    # the first events, seen again at a new position (not caught upstream): only the
    # remembered ids protect them, and the oldest have been forgotten
    moved, changed = apply(state, events[0], position=(4, orders))
    assert changed
    assert moved.customer is not None
    assert moved.customer.orders == orders + 1
    _, changed = apply(state, events[-1], position=(4, orders))
    assert not changed


def test_every_wall_clock_rule_shares_the_catch_up_setting_and_refuses_typos() -> None:
    from pydantic import ValidationError

    from services.rules.builtin.birthday import BirthdayConfig
    from services.rules.builtin.followup import FollowUpConfig
    from services.rules.builtin.renewal import RenewalConfig

    for config in (BirthdayConfig, FollowUpConfig, RenewalConfig):
        assert config(catch_up_hours=2).plan_after(T0) == T0 - timedelta(hours=2)
        with pytest.raises(ValidationError):
            config(catch_up_hours=30)  # a day late is not "late": the next one is planned
        with pytest.raises(ValidationError):
            config(catchup_hours=2)  # type: ignore[call-arg]  # a typo in rules.yaml, on purpose


def test_an_overlay_replaces_only_the_keys_it_names(tmp_path: Path) -> None:
    base, overlay = tmp_path / "rules.yaml", tmp_path / "overlay.yaml"
    base.write_text("renewal:\n  offsets_days: [60, 30]\n  local_time: '09:00'\n")
    overlay.write_text("renewal:\n  offsets_days: [1]\nrevisit:\n  enabled: false\n")
    assert read_config(base, overlay) == {
        "renewal": {"offsets_days": [1], "local_time": "09:00"},
        "revisit": {"enabled": False},
    }
    names = {rule.name for rule in load_rules(read_config(base, overlay))}
    assert "revisit" not in names
    assert "renewal" in names
