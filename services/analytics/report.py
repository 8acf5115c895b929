"""The maintenance report — what the product exists to show — and the manual work saved, from
the aggregates: renewal rate, reminder-to-renewal conversion, churn-risk recoveries, delivery
success, automation coverage, and hours and money saved per period, channel and owner.

The people side, from the counters and the read models (:class:`People`): tasks created,
completed, overdue and escalated, the median time to complete, open and overdue tasks by owner
and team, revisit compliance by tier and team, and the customers and channels without owner."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from services.analytics.aggregates import Aggregates, Attribution, totals
from services.analytics.funnels import JourneyFigures
from services.analytics.people import Load, Revisit, Share, Task, compliance, loads, median_hours
from services.analytics.readmodels import Revisits, Tasks
from services.analytics.scope import EVERYTHING, Scope


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
    tasks_created: int = 0
    tasks_completed: int = 0
    tasks_overdue: int = Field(0, description="times an open task's due time passed")
    tasks_escalated: int = 0
    median_hours_to_complete: float | None = Field(
        None, description="median of completed_at - created_at over the tasks completed"
    )
    revisit_compliance: float | None = Field(
        None, description="subjects in their revisit cadence / subjects under one, now"
    )
    unowned_customers: int | None = Field(None, description="customers without owner, now")
    unowned_channels: int | None = Field(None, description="channels without manager, now")


class TaskLoad(BaseModel):
    value: str = Field(description="the owner or team; empty: not known")
    open: int
    overdue: int
    oldest_created_at: datetime | None


class TaskSummary(BaseModel):
    since: datetime
    until: datetime
    created: int
    completed: int
    overdue: int = Field(description="times an open task's due time passed")
    escalated: int
    escalated_by_level: dict[str, int]
    snoozed: int
    reassigned: int
    median_hours_to_complete: float | None
    completed_measured: int = Field(description="tasks the median is over")
    open: int = Field(description="open tasks now")
    open_overdue: int = Field(description="open overdue tasks now")
    by_owner: list[TaskLoad] = Field(description="open tasks now, the oldest owner's first")
    by_team: list[TaskLoad]


class TaskItem(BaseModel):
    task_id: str
    about: str
    owner: str | None
    team: str | None
    rule: str | None
    title: str | None
    priority: str | None
    status: str
    overdue: bool
    escalation_level: int
    created_at: datetime | None
    due_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def of(cls, task: Task) -> TaskItem:
        return cls(
            task_id=task.task_id,
            about=task.about,
            owner=task.owner,
            team=task.team,
            rule=task.rule,
            title=task.title,
            priority=task.priority,
            status=task.status,
            overdue=task.overdue,
            escalation_level=task.level,
            created_at=task.created_at,
            due_at=task.due_at,
            completed_at=task.completed_at,
        )


class ComplianceRow(BaseModel):
    value: str = Field(description="the tier or team; empty: not known")
    subjects: int
    in_cadence: int
    rate: float | None


class RevisitCompliance(BaseModel):
    subjects: int
    in_cadence: int
    rate: float | None = Field(description="subjects in cadence / subjects under a cadence")
    by_tier: list[ComplianceRow]
    by_team: list[ComplianceRow]


class Unowned(BaseModel):
    customers: int
    channels: int


class Saving(BaseModel):
    start: datetime
    dim: str
    value: str
    touches: dict[str, int] = Field(description="automated touches by delivery kind")
    hours_saved: float
    money_saved: float
    currency: str


def _levels(counters: Mapping[str, int]) -> dict[str, int]:
    """Escalations by level (``"1"``, ``"2"``, …), the lowest first."""
    prefix = "tasks.escalated.level_"
    found = {k.removeprefix(prefix): n for k, n in counters.items() if k.startswith(prefix)}
    return dict(sorted(found.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0))


def ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _rows(shares: Mapping[str, Share]) -> list[ComplianceRow]:
    return [
        ComplianceRow(value=v, subjects=s.subjects, in_cadence=s.in_cadence, rate=s.rate)
        for v, s in shares.items()
    ]


def _load(load: Load) -> TaskLoad:
    return TaskLoad(
        value=load.value, open=load.open, overdue=load.overdue, oldest_created_at=load.oldest
    )


PEOPLE_DIMS = ("owner", "team")  # what the read models can be filtered by


@dataclass(frozen=True)
class People:
    """The read models of the people side: tasks, revisits, and whom subjects belong to."""

    tasks: Tasks
    revisits: Revisits
    subjects: Attribution

    async def median_hours(
        self,
        since: datetime,
        until: datetime,
        dim: str = "all",
        value: str | None = None,
        scope: Scope = EVERYTHING,
    ) -> tuple[float | None, int]:
        """The median time to complete of the tasks completed in ``[since, until)``, and how
        many it is over."""
        by = {dim: value} if dim in PEOPLE_DIMS and value is not None else {}
        owners = scope.values("owner")
        done = await self.tasks.completed(since, until, **by, owners=owners)
        durations = [d for d in (t.time_to_complete for t in done) if d is not None]
        return median_hours(durations), len(durations)

    async def compliance(
        self, dim: str = "all", value: str | None = None, scope: Scope = EVERYTHING
    ) -> RevisitCompliance:
        def matches(r: Revisit) -> bool:
            if not scope.owns(r.owner):
                return False
            if value is None or dim not in ("owner", "team", "tier"):
                return True
            return bool(getattr(r, dim) == value)

        overall, tiers, teams = compliance(r for r in await self.revisits.all() if matches(r))
        return RevisitCompliance(
            subjects=overall.subjects,
            in_cadence=overall.in_cadence,
            rate=overall.rate,
            by_tier=_rows(tiers),
            by_team=_rows(teams),
        )

    async def unowned(self) -> Unowned:
        found = await self.subjects.unowned()
        return Unowned(customers=found.get("customer", 0), channels=found.get("channel", 0))


@dataclass(frozen=True)
class Reporting:
    """The report over the aggregates, with the configured value of an automated touch:
    ``minutes_saved`` of manual work per touch, by delivery kind, at ``hourly_cost``; the
    people side's figures from the read models (``people``; None: counters only); and the
    journeys' (``journeys``; None: none)."""

    aggregates: Aggregates
    minutes_saved: Mapping[str, float]
    hourly_cost: float
    currency: str
    people: People | None = None
    journeys: JourneyFigures | None = None

    def hours_saved(self, counters: Mapping[str, int]) -> float:
        """Manual work the automated touches replaced: touches of each kind x its minutes."""
        minutes = self.minutes_saved.items()
        return sum(counters.get(f"touches.{kind}", 0) * m for kind, m in minutes) / 60

    async def counters(
        self,
        granularity: str,
        dim: str,
        since: datetime,
        until: datetime,
        value: str | None = None,
        scope: Scope = EVERYTHING,
    ) -> list[dict[str, Any]]:
        """The buckets of ``dim`` (one ``value``) a caller of ``scope`` may read; for a scoped
        caller "all" is the sum of their owners (one row per period, value ``*``)."""
        if scope.everything:
            return await self.aggregates.series(granularity, dim, since, until, value)
        view, values = scope.view(dim, value)
        rows = await self.aggregates.series(granularity, view, since, until, values=values)
        if view == dim:
            return rows
        by_start: dict[datetime, list[dict[str, Any]]] = {}
        for row in rows:
            by_start.setdefault(row["start"], []).append(row)
        return [
            {"start": start, "dim": "all", "value": "*", "counters": totals(found)}
            for start, found in sorted(by_start.items(), key=lambda kv: kv[0])
        ]

    async def report(
        self,
        since: datetime,
        until: datetime,
        dim: str = "all",
        value: str | None = None,
        scope: Scope = EVERYTHING,
    ) -> Report:
        c = totals(await self.counters("day", dim, since, until, value, scope))
        hours = self.hours_saved(c)
        touches = c.get("touches.automated", 0) + c.get("touches.manual", 0)
        people: dict[str, float | int | None] = {}
        if self.people is not None:
            people["median_hours_to_complete"], _ = await self.people.median_hours(
                since, until, dim, value, scope
            )
            compliance = await self.people.compliance(dim, value, scope)
            people["revisit_compliance"] = compliance.rate
            if dim == "all" and scope.everything:
                unowned = await self.people.unowned()
                people["unowned_customers"] = unowned.customers
                people["unowned_channels"] = unowned.channels
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
            tasks_created=c.get("tasks.created", 0),
            tasks_completed=c.get("tasks.completed", 0),
            tasks_overdue=c.get("tasks.overdue", 0),
            tasks_escalated=c.get("tasks.escalated", 0),
            **people,
        )

    async def task_summary(
        self,
        since: datetime,
        until: datetime,
        owner: str | None = None,
        team: str | None = None,
        scope: Scope = EVERYTHING,
    ) -> TaskSummary:
        """The tasks' counters over ``[since, until)`` (of one owner or team), the median time
        to complete, and the open tasks now."""
        dim, value = ("owner", owner) if owner else ("team", team) if team else ("all", None)
        c = totals(await self.counters("day", dim, since, until, value, scope))
        median, measured, open_tasks = None, 0, []
        if self.people is not None:
            median, measured = await self.people.median_hours(since, until, dim, value, scope)
            open_tasks = await self.people.tasks.open(
                owner=owner, team=team, limit=100_000, owners=scope.values("owner")
            )
        return TaskSummary(
            since=since,
            until=until,
            created=c.get("tasks.created", 0),
            completed=c.get("tasks.completed", 0),
            overdue=c.get("tasks.overdue", 0),
            escalated=c.get("tasks.escalated", 0),
            escalated_by_level=_levels(c),
            snoozed=c.get("tasks.snoozed", 0),
            reassigned=c.get("tasks.reassigned", 0),
            median_hours_to_complete=median,
            completed_measured=measured,
            open=len(open_tasks),
            open_overdue=sum(t.overdue for t in open_tasks),
            by_owner=[_load(x) for x in loads(open_tasks, "owner")],
            by_team=[_load(x) for x in loads(open_tasks, "team")],
        )

    async def savings(
        self,
        granularity: str,
        dim: str,
        since: datetime,
        until: datetime,
        value: str | None = None,
        scope: Scope = EVERYTHING,
    ) -> list[Saving]:
        """Hours and money saved per period (and per channel or owner with ``dim``)."""
        found = []
        for row in await self.counters(granularity, dim, since, until, value, scope):
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
