"""Cost and ROI over the aggregates, per channel, owner, team (or everything) and period, and the
budgets' use and forecast — the figures of :mod:`services.analytics.money` and
:mod:`services.analytics.budgets` read for a caller's scope."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from services.analytics.aggregates import Attribution, totals
from services.analytics.budgets import DIMENSION, Budgets, BudgetStatus, instants, period_dates
from services.analytics.budgets import period_of as budget_period_of
from services.analytics.budgets import status as budget_status
from services.analytics.money import MoneyFigures, RateTable, figures
from services.analytics.report import Reporting
from services.analytics.scope import EVERYTHING, Scope
from shared.events.fields import zone
from shared.events.types import BudgetSet


class RoiRow(BaseModel):
    start: datetime | None
    dim: str
    value: str
    money: MoneyFigures


@dataclass(frozen=True)
class Costing:
    """``rates``: the configured rate table (None: amounts stay per currency);
    ``min_elapsed``: the share of a budget's period before its forecast may raise an alert."""

    reporting: Reporting
    budgets: Budgets
    subjects: Attribution
    rates: RateTable | None = None
    min_elapsed: float = 0.2
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def money(self, counters: Mapping[str, int], active: str) -> MoneyFigures:
        replaced = Decimal(str(self.reporting.hours_saved(counters) * self.reporting.hourly_cost))
        return figures(counters, active, replaced, self.reporting.currency, self.rates)

    async def roi(
        self,
        granularity: str,
        dim: str,
        since: datetime,
        until: datetime,
        value: str | None = None,
        scope: Scope = EVERYTHING,
    ) -> list[RoiRow]:
        """Per week or month (and per value of ``dim``): revenue, cost by category, ROI, cost
        per active customer and the manual cost the automated touches replaced."""
        active = "customers.active.week" if granularity == "week" else "customers.active.month"
        rows = await self.reporting.counters(granularity, dim, since, until, value, scope)
        return [
            RoiRow(
                start=r["start"],
                dim=r["dim"],
                value=r["value"],
                money=self.money(r["counters"], active),
            )
            for r in rows
        ]

    async def total(
        self,
        since: datetime,
        until: datetime,
        dim: str = "all",
        value: str | None = None,
        scope: Scope = EVERYTHING,
    ) -> list[RoiRow]:
        """Over the whole window, one row per value of ``dim`` (one for "all"); active customers
        are summed by month (a customer active in two months counts twice)."""
        rows = await self.reporting.counters("day", dim, since, until, value, scope)
        grouped: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            grouped.setdefault(r["value"], []).append(r)
        return [
            RoiRow(
                start=None,
                dim=dim,
                value=v,
                money=self.money(totals(found), "customers.active.month"),
            )
            for v, found in sorted(grouped.items())
        ]

    async def owner_of(self, budget: BudgetSet) -> str | None:
        """Who answers for a budget: its ``owner_id``, else the owner it is for, else the
        channel's owner now."""
        if budget.owner_id:
            return budget.owner_id
        if budget.scope == "owner":
            return budget.scope_id
        if budget.scope == "channel":
            found = await self.subjects.get([f"channel:{budget.scope_id}"])
            return found.get(f"channel:{budget.scope_id}", {}).get("owner")
        return None

    def visible(self, budget: BudgetSet, scope: Scope) -> bool:
        """A budget's figures are its channel's, owner's or team's: shown to whoever may see
        those (who answers for it is told of an overrun, but sees no more than their scope)."""
        return scope.everything or scope.allows(DIMENSION[budget.scope], budget.scope_id)

    async def statuses(
        self,
        scope: Scope = EVERYTHING,
        now: datetime | None = None,
        current_only: bool = True,
    ) -> list[BudgetStatus]:
        """Every budget the scope may see (of the period holding ``now`` only, by default),
        with what is used of it and its forecast."""
        now = now or self.clock()
        tz = self.reporting.aggregates.timezone
        today = now.astimezone(zone(tz)).date()
        found = []
        for budget in await self.budgets.all():
            if current_only and budget.period_id != budget_period_of(budget.period, today):
                continue
            if not self.visible(budget, scope):
                continue
            owner = await self.owner_of(budget)
            try:
                start, end = instants(*period_dates(budget.period, budget.period_id), tz)
            except (ValueError, OverflowError):  # a period at the calendar's very edge
                continue
            kind = DIMENSION[budget.scope]
            # what was used by ``now``: a report about a past week sees its budget as it stood
            until = min(end, now)
            rows = await self.reporting.aggregates.series(
                "day", kind, start, until, budget.scope_id
            )
            found.append(
                budget_status(budget, totals(rows), now, tz, owner, self.rates, self.min_elapsed)
            )
        return found
