"""Contract renewal with chosen clocks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.rules.builtin.renewal import ContractRenewal, RenewalConfig
from services.rules.testing import RuleHarness

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


@pytest.fixture
def harness() -> RuleHarness:
    h = RuleHarness(ContractRenewal())
    h.send(
        "staff.upserted",
        at=T0,
        staff_id="S-1",
        name="Owner",
        timezone="Asia/Shanghai",
        locale="zh-CN",
        manager_id="S-9",
    )
    h.send("staff.upserted", at=T0, staff_id="S-9", name="Boss", timezone="Asia/Shanghai")
    h.send(
        "customer.upserted",
        at=T0,
        customer_id="C-1",
        name="Acme",
        timezone="Asia/Shanghai",
        owner_id="S-1",
    )
    return h


def contract(h: RuleHarness, at: datetime = T0, **extra: Any) -> None:
    h.send(
        "contract.upserted",
        at=at,
        contract_id="K-1",
        customer_id="C-1",
        start_date="2025-06-01",
        end_date="2026-05-31",
        value="12000",
        currency="CNY",
        **extra,
    )


def test_reminders_at_60_30_7_1_days_at_nine_local_then_escalation(harness: RuleHarness) -> None:
    contract(harness)
    actions = harness.advance(to=datetime(2026, 7, 1, tzinfo=UTC))
    assert [a.key for a in actions] == [
        "renewal:K-1:2026-05-31:60d",
        "renewal:K-1:2026-05-31:30d",
        "renewal:K-1:2026-05-31:7d",
        "renewal:K-1:2026-05-31:1d",
        "renewal:K-1:2026-05-31:overdue",
    ]
    first = actions[0]
    assert first.due_at == datetime(2026, 4, 1, 1, tzinfo=UTC)  # 09:00 in Shanghai
    assert (first.recipient.kind, first.recipient.id, first.locale) == ("staff", "S-1", "zh-CN")
    assert first.data["days_left"] == 60
    assert actions[-1].recipient.id == "S-9"  # the owner's manager
    assert actions[-1].template == "renewal_overdue"


def test_renewal_cancels_remaining_reminders_of_the_old_term(harness: RuleHarness) -> None:
    contract(harness)
    harness.advance(to=datetime(2026, 5, 1, tzinfo=UTC))  # 60d and 30d sent
    harness.send(
        "contract.renewed",
        at=datetime(2026, 5, 10, tzinfo=UTC),
        contract_id="K-1",
        customer_id="C-1",
        renewed_at="2026-05-10T03:00:00Z",
        new_end_date="2027-05-31",
    )
    later = harness.advance(to=datetime(2026, 12, 31, tzinfo=UTC))
    assert later == []
    assert harness.pending()[0].name == "K-1:2027-05-31:60d"
    assert all("2026-05-31" not in a.key for a in harness.actions[2:])


def test_nothing_further_once_cancelled(harness: RuleHarness) -> None:
    contract(harness)
    harness.send(
        "contract.cancelled",
        at=datetime(2026, 2, 1, tzinfo=UTC),
        contract_id="K-1",
        customer_id="C-1",
        cancelled_at="2026-02-01T00:00:00Z",
    )
    assert harness.advance(to=datetime(2027, 1, 1, tzinfo=UTC)) == []
    assert harness.pending() == []


def test_past_offsets_are_skipped_for_a_contract_ending_soon(harness: RuleHarness) -> None:
    contract(harness, at=datetime(2026, 5, 28, tzinfo=UTC))
    assert [t.name for t in harness.pending()] == ["K-1:2026-05-31:1d", "K-1:2026-05-31:overdue"]


def test_a_redelivered_event_plans_nothing_new(harness: RuleHarness) -> None:
    contract(harness)
    event_state = harness.states["customer:C-1"]
    before = harness.pending()
    contract(harness)  # same content, new event id: timers are moved onto themselves
    assert harness.pending() == before
    assert harness.states["customer:C-1"].contracts == event_state.contracts


def test_customer_notice_and_configured_offsets() -> None:
    h = RuleHarness(ContractRenewal(RenewalConfig(offsets_days=[14], notify_customer=True)))
    h.send(
        "customer.upserted",
        at=T0,
        customer_id="C-1",
        name="Acme",
        timezone="UTC",
        owner_id="S-1",
        locale="en",
    )
    contract(h)
    keys = [a.key for a in h.advance(to=datetime(2026, 5, 20, tzinfo=UTC))]
    assert keys == ["renewal:K-1:2026-05-31:14d", "renewal:K-1:2026-05-31:14d:customer"]


def test_a_reminder_missed_by_hours_goes_out_late_and_one_missed_by_a_day_does_not(
    harness: RuleHarness,
) -> None:
    # 2026-05-01 09:00 in Shanghai is 01:00 UTC; the contract arrives at 11:00 local
    contract(harness, at=datetime(2026, 5, 1, 3, tzinfo=UTC))
    names = [t.name for t in harness.pending()]
    assert names[0] == "K-1:2026-05-31:30d"  # missed by 2 hours: still planned ...
    actions = harness.advance(to=datetime(2026, 5, 1, 3, 1, tzinfo=UTC))
    assert [a.key for a in actions] == ["renewal:K-1:2026-05-31:30d"]  # ... and sent at once
    assert actions[0].due_at == datetime(2026, 5, 1, 1, tzinfo=UTC)

    late = RuleHarness(ContractRenewal(RenewalConfig(catch_up_hours=1)))
    late.send("customer.upserted", at=T0, customer_id="C-1", name="Acme", timezone="Asia/Shanghai")
    contract(late, at=datetime(2026, 5, 1, 3, tzinfo=UTC))
    assert "K-1:2026-05-31:30d" not in [t.name for t in late.pending()]
