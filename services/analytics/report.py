"""The maintenance report — what the product exists to show — and the manual work saved, from
the aggregates: renewal rate, reminder-to-renewal conversion, churn-risk recoveries, delivery
success, automation coverage, and hours and money saved per period, channel and owner."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, Field

from services.analytics.aggregates import Aggregates, totals


class Report(BaseModel):
    since: datetime
    until: datetime
    counters: dict[str, int]
    renewal_rate: float | None = Field(description="terms renewed / terms due")
    reminder_conversion: float | None = Field(
        description="reminded terms renewed after the reminder / terms reminded"
    )
    churn_recoveries: int = Field(description="customers whose churn risk fell back")
    recovery_rate: float | None = Field(description="recovered / entered churn risk")
    delivery_success_rate: float | None = Field(description="sent / (sent + failed)")
    automation_coverage: float | None = Field(description="touches without a person / all touches")
    hours_saved: float
    money_saved: float
    currency: str


class Saving(BaseModel):
    start: datetime
    dim: str
    value: str
    touches: dict[str, int] = Field(description="automated touches by delivery kind")
    hours_saved: float
    money_saved: float
    currency: str


def ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass(frozen=True)
class Reporting:
    """The report over the aggregates, with the configured value of an automated touch:
    ``minutes_saved`` of manual work per touch, by delivery kind, at ``hourly_cost``."""

    aggregates: Aggregates
    minutes_saved: Mapping[str, float]
    hourly_cost: float
    currency: str

    def hours_saved(self, counters: Mapping[str, int]) -> float:
        """Manual work the automated touches replaced: touches of each kind x its minutes."""
        minutes = self.minutes_saved.items()
        return sum(counters.get(f"touches.{kind}", 0) * m for kind, m in minutes) / 60

    async def report(
        self, since: datetime, until: datetime, dim: str = "all", value: str | None = None
    ) -> Report:
        c = totals(await self.aggregates.series("day", dim, since, until, value))
        hours = self.hours_saved(c)
        touches = c.get("touches.automated", 0) + c.get("touches.manual", 0)
        return Report(
            since=since,
            until=until,
            counters=c,
            renewal_rate=ratio(c.get("renewals.renewed", 0), c.get("renewals.due", 0)),
            reminder_conversion=ratio(
                c.get("renewals.converted", 0), c.get("renewals.reminded", 0)
            ),
            churn_recoveries=c.get("customers.recovered", 0),
            recovery_rate=ratio(c.get("customers.recovered", 0), c.get("customers.at_risk", 0)),
            delivery_success_rate=ratio(
                c.get("deliveries.sent", 0),
                c.get("deliveries.sent", 0) + c.get("deliveries.failed", 0),
            ),
            automation_coverage=ratio(c.get("touches.automated", 0), touches),
            hours_saved=round(hours, 2),
            money_saved=round(hours * self.hourly_cost, 2),
            currency=self.currency,
        )

    async def savings(
        self,
        granularity: str,
        dim: str,
        since: datetime,
        until: datetime,
        value: str | None = None,
    ) -> list[Saving]:
        """Hours and money saved per period (and per channel or owner with ``dim``)."""
        found = []
        for row in await self.aggregates.series(granularity, dim, since, until, value):
            hours = self.hours_saved(row["counters"])
            found.append(
                Saving(
                    start=row["start"],
                    dim=row["dim"],
                    value=row["value"],
                    touches={k: row["counters"].get(f"touches.{k}", 0) for k in self.minutes_saved},
                    hours_saved=round(hours, 2),
                    money_saved=round(hours * self.hourly_cost, 2),
                    currency=self.currency,
                )
            )
        return found
