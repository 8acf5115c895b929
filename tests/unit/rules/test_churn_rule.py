"""The churn rule: entering and leaving the at-risk state, with hysteresis and one timer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.rules.churn.bgnbd import BgNbdParams
from services.rules.churn.rule import ChurnConfig, ChurnModel, ChurnRisk
from services.rules.testing import RuleHarness

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WEEKLY_BUYERS = BgNbdParams(r=1.0, alpha=7.0, a=0.8, b=4.0)  # about one order a week, in days


def harness(params: BgNbdParams | None = WEEKLY_BUYERS) -> tuple[RuleHarness, ChurnRisk]:
    rule = ChurnRisk(ChurnConfig(), ChurnModel(params=params))
    h = RuleHarness(rule)
    h.send("customer.upserted", at=T0, customer_id="C-1", name="Li", timezone="UTC", owner_id="S-1")
    return h, rule


def order(h: RuleHarness, n: int, at: datetime) -> None:
    h.send(
        "customer.interaction",
        at=at,
        customer_id="C-1",
        interaction_id=f"I-{n}",
        kind="order",
        occurred_at=at.isoformat(),
    )


def test_a_silent_regular_buyer_is_flagged_once_when_the_risk_crosses() -> None:
    h, _ = harness()
    for week in range(8):
        order(h, week, T0 + timedelta(days=7 * week))
    (timer,) = h.pending("churn")
    assert timer.name == "crossing"
    alerts = h.advance(to=T0 + timedelta(days=400))
    assert [a.key for a in alerts] == ["churn:C-1:at-risk:2026-02-19"]  # the last order
    assert alerts[0].recipient.id == "S-1"
    assert alerts[0].data["risk"] >= 0.7
    assert alerts[0].due_at == timer.due_at  # alerted when the risk crossed, not later
    assert h.states["customer:C-1"].customer.at_risk  # type: ignore[union-attr]
    assert [e.data["at_risk"] for e in h.emitted] == [True]


def test_recovery_needs_the_risk_to_fall_below_the_lower_threshold() -> None:
    h, _ = harness()
    for week in range(8):
        order(h, week, T0 + timedelta(days=7 * week))
    h.advance(to=T0 + timedelta(days=200))
    back = T0 + timedelta(days=200)
    order(h, 100, back)  # one order after a long silence: still not convincing
    order(h, 101, back + timedelta(days=2))
    customer = h.states["customer:C-1"].customer
    assert customer is not None
    flags = [e.data["at_risk"] for e in h.emitted]
    assert flags[0] is True
    if customer.churn_risk is not None and customer.churn_risk > 0.5:
        assert customer.at_risk  # between the thresholds it stays at risk: no flapping
    for n in range(102, 110):  # regular orders again
        order(h, n, back + timedelta(days=2 + 7 * (n - 101)))
    assert [e.data["at_risk"] for e in h.emitted][-1] is False
    assert not h.states["customer:C-1"].customer.at_risk  # type: ignore[union-attr]
    assert len([a for a in h.actions if a.template == "churn_risk_alert"]) == 1


def test_without_a_fitted_model_nothing_is_decided() -> None:
    h, _ = harness(params=None)
    order(h, 1, T0)
    assert h.advance(to=T0 + timedelta(days=1000)) == []
    assert h.pending("churn") == []


def test_the_weekly_slot_is_the_latest_configured_weekday_and_hour() -> None:
    config = ChurnConfig(weekly_list_weekday=0, weekly_list_hour_utc=1)  # Mondays 01:00 UTC
    (job,) = ChurnRisk(config).schedules
    assert (job.name, job.kind, dict(job.where)) == (
        "weekly-at-risk",
        "customer",
        {"customer.at_risk": True},
    )
    wednesday = datetime(2026, 11, 25, 15, tzinfo=UTC)
    assert job.slot(wednesday) == datetime(2026, 11, 23, 1, tzinfo=UTC)
    monday_early = datetime(2026, 11, 23, 0, 30, tzinfo=UTC)
    assert job.slot(monday_early) == datetime(2026, 11, 16, 1, tzinfo=UTC)
    monday = datetime(2026, 11, 23, 1, tzinfo=UTC)
    assert job.slot(monday) == monday
