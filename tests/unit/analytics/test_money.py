"""services/analytics/money.py and budgets.py: cost, revenue and ROI per currency (never added
across currencies without a rate table), budgets' use and forecast, and their periods."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from services.analytics.budgets import period_dates, period_of, status
from services.analytics.facts import read
from services.analytics.money import RateTable, figures
from shared.events.types import BudgetSet, CostRecorded
from tests.unit.analytics.fact_builders import event_record

COUNTERS = {
    "revenue.CNY": 1_000_000,  # 10,000.00
    "revenue.USD": 50_000,  # 500.00
    "sell_through_value.CNY": 300_000,
    "cost.CNY": 200_000,  # 2,000.00
    "cost.travel.CNY": 50_000,
    "cost.gift.CNY": 150_000,
    "cost.USD": 10_000,  # 100.00
    "cost.rebate.USD": 10_000,
    "customers.active.month": 4,
    "touches.automated": 30,
}


def test_figures_stay_per_currency_without_a_rate_table() -> None:
    found = figures(COUNTERS, "customers.active.month", Decimal("120"), "EUR")
    cny, usd = found.by_currency
    assert (cny.currency, cny.revenue, cny.cost, cny.sell_through) == (
        "CNY",
        Decimal("10000"),
        Decimal("2000"),
        Decimal("3000"),
    )
    assert cny.roi == Decimal("4.00")  # (10000 - 2000) / 2000
    assert cny.cost_by_category == {"travel": Decimal("500"), "gift": Decimal("1500")}
    assert cny.cost_per_active_customer == Decimal("500.00")
    assert (usd.revenue, usd.cost, usd.roi) == (Decimal("500"), Decimal("100"), Decimal("4.00"))
    assert found.converted is None
    assert found.rates_used is None
    assert found.manual_cost_replaced == Decimal("120.00")
    assert found.automated_touches == 30


def test_a_rate_table_converts_into_its_base_and_says_which_rates() -> None:
    rates = RateTable(base="CNY", rates={"USD": Decimal("7.10")}, as_of="2026-11-30")
    found = figures(COUNTERS, "customers.active.month", Decimal(0), "EUR", rates)
    assert found.converted is not None
    assert found.converted.revenue == Decimal("13550.00")  # 10000 + 500 x 7.1
    assert found.converted.cost == Decimal("2710.00")  # 2000 + 100 x 7.1
    assert found.converted.roi == Decimal("4.00")
    assert found.rates_used == "USD→CNY 7.10 (2026-11-30)"
    assert found.unconverted == []


def test_a_currency_without_a_rate_is_left_out_of_the_conversion_and_named() -> None:
    rates = RateTable(base="EUR", rates={"USD": Decimal("0.9")})
    found = figures(COUNTERS, "customers.active.month", Decimal(0), "EUR", rates)
    assert found.unconverted == ["CNY"]
    assert found.converted is not None
    assert found.converted.cost == Decimal("90.00")


def test_without_cost_there_is_no_roi() -> None:
    found = figures({"revenue.EUR": 100}, "customers.active.month", Decimal(0), "EUR")
    assert found.by_currency[0].roi is None
    assert found.by_currency[0].cost_per_active_customer is None


def test_staff_hours_cost_hours_times_rate_on_the_day_incurred() -> None:
    record = event_record(
        "cost.recorded",
        about="channel:CH-1",
        cost_id="K-9",
        category="staff_time",
        hours="2.5",
        hourly_rate="180.50",
        currency="cny",
        incurred_on="2026-11-20",
        recorded_at="2026-11-22T10:00:00Z",
    )
    facts = {f.identity: f for f in read("events", record, "Asia/Shanghai").facts}
    cost = facts["cost:K-9"]
    assert cost.counters == {"costs": 1, "cost.CNY": 45125, "cost.staff_time.CNY": 45125}
    assert cost.at == datetime(2026, 11, 20, 4, tzinfo=UTC)  # noon in Shanghai
    assert cost.subject == "channel:CH-1"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"category": "gift"}, "needs an amount"),
        ({"category": "gift", "hours": "1", "hourly_rate": "10"}, "only for category staff_time"),
        ({"category": "staff_time", "hours": "1"}, "both hours and hourly_rate"),
        (
            {"category": "staff_time", "hours": "2", "hourly_rate": "10", "amount": "25"},
            "not hours x hourly_rate",
        ),
    ],
)
def test_a_cost_that_does_not_add_up_is_refused(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CostRecorded.model_validate(
            {
                "about": "customer:C-1",
                "cost_id": "K-1",
                "currency": "EUR",
                "incurred_on": "2026-11-01",
                "recorded_at": "2026-11-01T00:00:00Z",
                **fields,
            }
        )


@pytest.mark.parametrize(
    ("period", "period_id", "first", "after"),
    [
        ("month", "2026-12", date(2026, 12, 1), date(2027, 1, 1)),
        ("month", "2026-02", date(2026, 2, 1), date(2026, 3, 1)),
        ("quarter", "2026-Q4", date(2026, 10, 1), date(2027, 1, 1)),
        ("quarter", "2026-Q1", date(2026, 1, 1), date(2026, 4, 1)),
        ("year", "2026", date(2026, 1, 1), date(2027, 1, 1)),
    ],
)
def test_periods(period: str, period_id: str, first: date, after: date) -> None:
    assert period_dates(period, period_id) == (first, after)
    assert period_of(period, first) == period_id


def budget(**changes: object) -> BudgetSet:
    fields = {
        "budget_id": "B-1",
        "scope": "channel",
        "scope_id": "CH-1",
        "period": "month",
        "period_id": "2026-11",
        "amount": "3000",
        "currency": "CNY",
        "set_at": "2026-11-01T00:00:00Z",
        **changes,
    }
    return BudgetSet.model_validate(fields)


def test_a_budget_is_forecast_at_the_run_rate_so_far() -> None:
    now = datetime(2026, 11, 11, tzinfo=UTC)  # a third of November gone
    found = status(budget(), {"cost.CNY": 150_000}, now, "UTC", "S-1")
    assert found.used == Decimal("1500.00")
    assert found.elapsed_share == pytest.approx(0.3333, abs=1e-4)
    assert found.forecast == Decimal("4500.00")
    assert found.overrun_forecast
    assert (found.used_share, found.forecast_share) == (0.5, 1.5)


def test_an_early_forecast_raises_nothing_until_enough_of_the_period_is_gone() -> None:
    now = datetime(2026, 11, 3, tzinfo=UTC)  # 2 of 30 days
    found = status(budget(), {"cost.CNY": 50_000}, now, "UTC", "S-1")
    assert found.forecast == Decimal("7500.00")
    assert not found.overrun_forecast
    over = status(budget(), {"cost.CNY": 400_000}, now, "UTC", "S-1")
    assert over.overrun_forecast  # used is over the amount already


def test_a_closed_period_forecasts_what_was_used() -> None:
    now = datetime(2026, 12, 5, tzinfo=UTC)
    found = status(budget(), {"cost.CNY": 250_000}, now, "UTC", None)
    assert found.forecast == found.used == Decimal("2500.00")
    assert not found.overrun_forecast


def test_costs_in_another_currency_count_only_with_a_rate() -> None:
    now = datetime(2026, 12, 5, tzinfo=UTC)
    counters = {"cost.CNY": 100_000, "cost.USD": 20_000}
    alone = status(budget(), counters, now, "UTC", None)
    assert alone.used == Decimal("1000.00")
    assert alone.uncounted == {"USD": Decimal("200")}
    rates = RateTable(base="EUR", rates={"USD": Decimal("0.9"), "CNY": Decimal("0.125")})
    converted = status(budget(), counters, now, "UTC", None, rates)
    assert converted.used == Decimal("2440.00")  # 1000 + 200 x 0.9 / 0.125
    assert converted.uncounted == {}
    assert converted.rates_used is not None


def test_a_budget_of_zero_is_switched_off() -> None:
    found = status(
        budget(amount="0"), {"cost.CNY": 100}, datetime(2026, 11, 20, tzinfo=UTC), "UTC", None
    )
    assert not found.overrun_forecast
    assert found.used_share is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"period_id": "2026-13"}, "is not a month"),
        ({"period": "quarter", "period_id": "2026-11"}, "is not a quarter"),
        ({"scope": "team", "scope_id": "T-1"}, "needs owner_id"),
    ],
)
def test_a_budget_that_makes_no_sense_is_refused(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        budget(**changes)
