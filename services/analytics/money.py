"""What maintenance costs and returns: the money facts of events, and the figures computed from
their counters. Pure, no I/O.

**Counters** (integers, minor units per currency, as every amount in the aggregates):

* ``cost.<CUR>`` and ``cost.<category>.<CUR>`` — the cost entries (``upkeep.cost.recorded.v1``)
  and ``costs`` (how many), counted on the local day they were incurred; staff hours count as
  hours x rate;
* ``revenue.<CUR>`` — what customers ordered and what channels ordered from us (sell-in);
  ``sell_through_value.<CUR>`` and ``sell_through`` — what channels sold on to end customers,
  shown beside revenue but not added to it (it would count the same goods twice);
* ``customers.active.month`` / ``customers.active.week`` — a customer with any interaction in the
  month (ISO week) counts once in it: the identity is the customer and the period.

**Figures.** ROI = (revenue - cost) / cost. Amounts of different currencies are never added:
every figure is per currency, unless a :class:`RateTable` is configured, when each is converted
into its base currency as well and the figures say which rates they used.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, time
from decimal import ROUND_HALF_EVEN, Decimal

from pydantic import BaseModel, ConfigDict, Field

from shared.events.fields import zone
from shared.events.types import CostRecorded, CustomerInteraction

CATEGORIES = ("travel", "gift", "rebate", "event", "staff_time", "other")
CENT = Decimal("0.01")


def cents(amount: Decimal) -> int:
    """Minor units; a half cent rounds to the even cent (banker's rounding, as ledgers do)."""
    return int((amount * 100).to_integral_value(rounding=ROUND_HALF_EVEN))


def cost_fact_parts(cost: CostRecorded, tz: str) -> tuple[str, datetime, dict[str, int]]:
    """The identity, moment (noon of the day it was incurred, in the reporting time zone: always
    inside that day's bucket) and counters of a cost entry."""
    amount = cents(cost.total())
    counters = {
        "costs": 1,
        f"cost.{cost.currency}": amount,
        f"cost.{cost.category}.{cost.currency}": amount,
    }
    at = datetime.combine(cost.incurred_on, time(12), zone(tz))
    return f"cost:{cost.cost_id}", at, counters


def activity_parts(
    interaction: CustomerInteraction, at: datetime, tz: str
) -> list[tuple[str, dict[str, int]]]:
    """A customer active in the month and the ISO week of ``at`` (in the reporting time zone):
    one identity per customer and period."""
    local = at.astimezone(zone(tz)).date()
    year, week, _ = local.isocalendar()
    who = interaction.customer_id
    return [
        (f"active:month:{who}:{local:%Y-%m}", {"customers.active.month": 1}),
        (f"active:week:{who}:{year}-W{week:02d}", {"customers.active.week": 1}),
    ]


class RateTable(BaseModel):
    """Exchange rates into ``base``: ``rates["USD"] = 7.1`` means 1 USD is 7.1 of the base."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: str = Field(pattern=r"^[A-Z]{3}$")
    rates: dict[str, Decimal] = Field(default_factory=dict)
    as_of: str | None = Field(None, max_length=40, description="where the rates are from")

    def rate(self, currency: str) -> Decimal | None:
        return Decimal(1) if currency == self.base else self.rates.get(currency)

    def note(self, currencies: set[str]) -> str:
        used = sorted(c for c in currencies if c != self.base and c in self.rates)
        parts = [f"{c}→{self.base} {self.rates[c]}" for c in used]
        text = ", ".join(parts) if parts else f"all in {self.base}"
        return f"{text} ({self.as_of})" if self.as_of else text


class CurrencyFigures(BaseModel):
    currency: str
    revenue: Decimal
    sell_through: Decimal
    cost: Decimal
    cost_by_category: dict[str, Decimal]
    roi: Decimal | None = Field(description="(revenue - cost) / cost; None without cost")
    cost_per_active_customer: Decimal | None


class MoneyFigures(BaseModel):
    """Revenue, cost and ROI of one channel, owner, team (or everything) over a period."""

    by_currency: list[CurrencyFigures]
    converted: CurrencyFigures | None = Field(
        None, description="every currency in the rate table's base (only with a rate table)"
    )
    rates_used: str | None = None
    unconverted: list[str] = Field(
        default_factory=list, description="currencies the rate table has no rate for"
    )
    active_customers: int
    automated_touches: int
    manual_cost_replaced: Decimal = Field(description="the manual work the touches replaced")
    manual_cost_currency: str


def amounts(counters: Mapping[str, int], prefix: str) -> dict[str, Decimal]:
    """``prefix.<CUR>`` counters as amounts per currency."""
    found: dict[str, Decimal] = {}
    for name, value in counters.items():
        if name.startswith(prefix):
            rest = name.removeprefix(prefix)
            if len(rest) == 3 and rest.isupper():
                found[rest] = (Decimal(value) / 100).quantize(CENT)
    return found


def _roi(revenue: Decimal, cost: Decimal) -> Decimal | None:
    return ((revenue - cost) / cost).quantize(CENT) if cost else None


def _per(cost: Decimal, active: int) -> Decimal | None:
    return (cost / active).quantize(CENT) if active else None


def figures(
    counters: Mapping[str, int],
    active_counter: str,
    manual_cost_replaced: Decimal,
    manual_currency: str,
    rates: RateTable | None = None,
) -> MoneyFigures:
    """The money figures of summed counters. ``active_counter``: ``customers.active.month`` for
    months (and longer: a sum of months), ``customers.active.week`` for weeks."""
    revenue, sell = amounts(counters, "revenue."), amounts(counters, "sell_through_value.")
    cost = amounts(counters, "cost.")
    by_category = {c: amounts(counters, f"cost.{c}.") for c in CATEGORIES}
    active = counters.get(active_counter, 0)
    rows = []
    for cur in sorted(set(revenue) | set(sell) | set(cost)):
        zero = Decimal(0).quantize(CENT)
        r, s, k = revenue.get(cur, zero), sell.get(cur, zero), cost.get(cur, zero)
        in_cur = {c: v[cur] for c, v in by_category.items() if cur in v}
        rows.append(
            CurrencyFigures(
                currency=cur,
                revenue=r,
                sell_through=s,
                cost=k,
                cost_by_category=in_cur,
                roi=_roi(r, k),
                cost_per_active_customer=_per(k, active),
            )
        )
    converted, note, missing = None, None, []
    if rates is not None:
        total = {"revenue": Decimal(0), "sell": Decimal(0), "cost": Decimal(0)}
        categories: dict[str, Decimal] = {}
        for row in rows:
            rate = rates.rate(row.currency)
            if rate is None:
                missing.append(row.currency)
                continue
            total["revenue"] += row.revenue * rate
            total["sell"] += row.sell_through * rate
            total["cost"] += row.cost * rate
            for c, v in row.cost_by_category.items():
                categories[c] = categories.get(c, Decimal(0)) + v * rate
        converted = CurrencyFigures(
            currency=rates.base,
            revenue=total["revenue"].quantize(CENT),
            sell_through=total["sell"].quantize(CENT),
            cost=total["cost"].quantize(CENT),
            cost_by_category={c: v.quantize(CENT) for c, v in categories.items()},
            roi=_roi(total["revenue"], total["cost"]),
            cost_per_active_customer=_per(total["cost"], active),
        )
        note = rates.note({r.currency for r in rows})
    return MoneyFigures(
        by_currency=rows,
        converted=converted,
        rates_used=note,
        unconverted=missing,
        active_customers=active,
        automated_touches=counters.get("touches.automated", 0),
        manual_cost_replaced=manual_cost_replaced.quantize(CENT),
        manual_cost_currency=manual_currency,
    )
