"""Maintenance budgets (``upkeep.budget.set.v1``) and how far each is used: the cost counted
against it so far in its period, and the forecast for the whole period at the run rate so far.

A budget is for a channel, an owner or a team and one month, quarter or year, cut in the
reporting time zone (the days the costs are counted in). Only costs in the budget's currency
count against it — unless a rate table converts the others; costs in a currency it has no rate
for are listed, never added.

**Forecast.** ``used / elapsed`` where ``elapsed`` is the share of the period gone by; once the
period is over, the forecast is what was used. A budget is *forecast to overrun* when what is
used is over the amount already, or when at least ``min_elapsed`` of the period has gone by and
the forecast is over the amount (one early cost on the first day forecasts nothing).

The read model (``analytics_budgets``) keeps the latest version of each budget (by ``set_at``).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from pydantic import BaseModel, Field
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from services.analytics.money import CENT, RateTable, amounts
from shared.events.fields import zone
from shared.events.types import BudgetSet
from shared.mongo import Document

DIMENSION = {"channel": "channel", "owner": "owner", "team": "team"}  # scope -> bucket dimension


def period_dates(period: str, period_id: str) -> tuple[date, date]:
    """The first day of a period and the first day after it."""
    if period == "month":
        year, month = (int(x) for x in period_id.split("-"))
        first = date(year, month, 1)
        after = date(year + month // 12, month % 12 + 1, 1)
    elif period == "quarter":
        year, quarter = int(period_id[:4]), int(period_id[-1])
        first = date(year, 3 * quarter - 2, 1)
        after = date(year + quarter // 4, (3 * quarter) % 12 + 1, 1)
    else:
        first, after = date(int(period_id), 1, 1), date(int(period_id) + 1, 1, 1)
    return first, after


def period_of(period: str, day: date) -> str:
    """The id of the month, quarter or year holding ``day``."""
    if period == "month":
        return f"{day:%Y-%m}"
    if period == "quarter":
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    return str(day.year)


def instants(first: date, after: date, tz: str) -> tuple[datetime, datetime]:
    return (
        datetime.combine(first, time(), zone(tz)).astimezone(UTC),
        datetime.combine(after, time(), zone(tz)).astimezone(UTC),
    )


class BudgetStatus(BaseModel):
    budget_id: str
    name: str
    scope: str
    scope_id: str
    owner: str | None = Field(description="who answers for it (None: not known yet)")
    period: str
    period_id: str
    period_from: date
    period_to: date = Field(description="the last day of the period")
    currency: str
    amount: Decimal
    used: Decimal
    used_share: float | None
    forecast: Decimal
    forecast_share: float | None
    elapsed_share: float
    overrun_forecast: bool
    uncounted: dict[str, Decimal] = Field(
        default_factory=dict, description="costs in other currencies, without a rate for them"
    )
    rates_used: str | None = None


def status(
    budget: BudgetSet,
    counters: Mapping[str, int],
    now: datetime,
    tz: str,
    owner: str | None,
    rates: RateTable | None = None,
    min_elapsed: float = 0.2,
) -> BudgetStatus:
    """How far ``budget`` is used, from the summed counters of its scope over its period."""
    first, after = period_dates(budget.period, budget.period_id)
    start, end = instants(first, after, tz)
    elapsed = min(1.0, max(0.0, (now - start) / (end - start)))
    costs = amounts(counters, "cost.")
    used = costs.pop(budget.currency, Decimal(0))
    uncounted, note = {}, None
    for currency, amount in sorted(costs.items()):
        rate = rates.rate(currency) if rates is not None else None
        base_rate = rates.rate(budget.currency) if rates is not None else None
        if rate is None or not base_rate:
            uncounted[currency] = amount
        else:
            used += amount * rate / base_rate  # via the base: currency -> base -> budget's
    if rates is not None and len(uncounted) < len(costs):
        note = rates.note(set(costs) | {budget.currency})
    used = used.quantize(CENT)
    forecast = used if elapsed >= 1 or elapsed == 0 else (used / Decimal(elapsed)).quantize(CENT)
    amount = budget.amount
    over = amount > 0 and (used > amount or (elapsed >= min_elapsed and forecast > amount))
    return BudgetStatus(
        budget_id=budget.budget_id,
        name=budget.name or budget.budget_id,
        scope=budget.scope,
        scope_id=budget.scope_id,
        owner=owner,
        period=budget.period,
        period_id=budget.period_id,
        period_from=first,
        period_to=after - timedelta(days=1),
        currency=budget.currency,
        amount=amount,
        used=used,
        used_share=round(float(used / amount), 4) if amount else None,
        forecast=forecast,
        forecast_share=round(float(forecast / amount), 4) if amount else None,
        elapsed_share=round(elapsed, 4),
        overrun_forecast=over,
        uncounted=uncounted,
        rates_used=note,
    )


class Budgets(abc.ABC):
    """The budgets read model: the latest version of each budget."""

    @abc.abstractmethod
    async def apply(self, budgets: Sequence[BudgetSet]) -> None: ...

    @abc.abstractmethod
    async def all(self) -> list[BudgetSet]: ...


class MongoBudgets(Budgets):
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self._collection = collection

    async def apply(self, budgets: Sequence[BudgetSet]) -> None:
        latest: dict[str, BudgetSet] = {}
        for b in budgets:
            if b.budget_id not in latest or b.set_at >= latest[b.budget_id].set_at:
                latest[b.budget_id] = b
        ops = [
            # an older version matches nothing, and its upsert collides with the newer one
            UpdateOne(
                {"_id": b.budget_id, "set_at": {"$lte": b.set_at}},
                {"$set": {"set_at": b.set_at, "budget": b.model_dump(mode="json")}},
                upsert=True,
            )
            for b in latest.values()
        ]
        if not ops:
            return
        try:
            await self._collection.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise

    async def all(self) -> list[BudgetSet]:
        found = [BudgetSet.model_validate(doc["budget"]) async for doc in self._collection.find({})]
        return sorted(found, key=lambda b: b.budget_id)


@dataclass(frozen=True, slots=True)
class Watched:
    """A budget and what it takes to judge it: its counters over its period, its owner."""

    budget: BudgetSet
    counters: Mapping[str, int]
    owner: str | None
