"""The analytics JSON API: time series of every counter by dimension and period, the maintenance
report, the manual work saved, CSV export; the people side: the task summary, open and
overdue tasks, revisit compliance, and the subjects without owner; and the journeys' funnels."""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel

from services.analytics.callers import Caller
from services.analytics.funnels import JourneyDetail, JourneyFigures, JourneySummary
from services.analytics.readmodels import LIST_LIMIT
from services.analytics.report import (
    People,
    Report,
    Reporting,
    RevisitCompliance,
    Saving,
    TaskItem,
    TaskSummary,
    Unowned,
)
from services.analytics.scope import out_of_scope

CallerDependency = Callable[..., Awaitable[Caller]]

Granularity = Literal["hour", "day", "week", "month"]
Dimension = Literal["all", "rule", "kind", "owner", "channel", "tier", "team"]
SeriesDimension = Literal["all", "rule", "kind", "owner", "channel", "tier", "team", "journey"]
RevisitDimension = Literal["all", "owner", "team", "tier"]


class Row(BaseModel):
    start: datetime
    dim: str
    value: str
    counters: dict[str, int]


def analytics_router(reporting: Reporting, caller: CallerDependency) -> APIRouter:
    """Every route needs a caller (``caller``: the authenticating dependency); every answer is
    cut to the caller's scope."""
    Who = Depends(caller)  # a default, so the route's annotation stays a plain type
    router = APIRouter(prefix="/v1", tags=["analytics"], dependencies=[Depends(caller)])

    def window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
        until = until or datetime.now(UTC) + timedelta(days=1)
        return since or until - timedelta(days=31), until

    @router.get("/series", response_model=list[Row], summary="Counters per bucket")
    async def series(
        granularity: Granularity = "day",
        dim: SeriesDimension = "all",
        value: str | None = None,
        since: Annotated[datetime | None, Query(alias="from")] = None,
        until: Annotated[datetime | None, Query(alias="to")] = None,
        who: Caller = Who,
    ) -> list[dict[str, Any]]:
        start, end = window(since, until)
        return await reporting.counters(granularity, dim, start, end, value, who.scope)

    @router.get("/series.csv", summary="Counters per bucket, as CSV")
    async def series_csv(
        granularity: Granularity = "day",
        dim: SeriesDimension = "all",
        value: str | None = None,
        since: Annotated[datetime | None, Query(alias="from")] = None,
        until: Annotated[datetime | None, Query(alias="to")] = None,
        who: Caller = Who,
    ) -> Response:
        start, end = window(since, until)
        rows = await reporting.counters(granularity, dim, start, end, value, who.scope)
        names = sorted({n for r in rows for n in r["counters"]})
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["start", "dimension", "value", *names])
        for r in rows:
            counters = r["counters"]
            writer.writerow(
                [r["start"].isoformat(), r["dim"], r["value"], *(counters.get(n, 0) for n in names)]
            )
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8")

    @router.get("/savings", response_model=list[Saving], summary="Manual work saved, per period")
    async def savings(
        granularity: Granularity = "month",
        dim: Dimension = "all",
        value: str | None = None,
        since: Annotated[datetime | None, Query(alias="from")] = None,
        until: Annotated[datetime | None, Query(alias="to")] = None,
        who: Caller = Who,
    ) -> list[Saving]:
        """Hours and money saved per period and per channel or owner (``dim``)."""
        start, end = window(since, until)
        return await reporting.savings(granularity, dim, start, end, value, who.scope)

    @router.get("/report", response_model=Report, summary="The maintenance report")
    async def report(
        dim: Dimension = "all",
        value: str | None = None,
        since: Annotated[datetime | None, Query(alias="from")] = None,
        until: Annotated[datetime | None, Query(alias="to")] = None,
        who: Caller = Who,
    ) -> Report:
        start, end = window(since, until)
        return await reporting.report(start, end, dim, value, who.scope)

    if reporting.people is not None:
        router.include_router(people_router(reporting, reporting.people, window, Who))
    if reporting.journeys is not None:
        router.include_router(journeys_router(reporting.journeys, Who))
    return router


def people_router(
    reporting: Reporting,
    people: People,
    window: Callable[[datetime | None, datetime | None], tuple[datetime, datetime]],
    Who: Any,
) -> APIRouter:
    router = APIRouter()

    @router.get("/tasks/summary", response_model=TaskSummary, summary="Tasks: counts and times")
    async def task_summary(
        owner: str | None = None,
        team: str | None = None,
        since: Annotated[datetime | None, Query(alias="from")] = None,
        until: Annotated[datetime | None, Query(alias="to")] = None,
        who: Caller = Who,
    ) -> TaskSummary:
        """Tasks created, completed, overdue, escalated (by level), snoozed and reassigned in
        the window, the median time to complete of those completed in it, and the open tasks
        now by owner and team; of one ``owner`` or ``team``."""
        start, end = window(since, until)
        return await reporting.task_summary(start, end, owner, team, who.scope)

    @router.get("/tasks", response_model=list[TaskItem], summary="Open tasks, the oldest first")
    async def open_tasks(
        owner: str | None = None,
        team: str | None = None,
        overdue: bool | None = None,
        limit: Annotated[int, Query(ge=1, le=LIST_LIMIT)] = 100,
        who: Caller = Who,
    ) -> list[TaskItem]:
        """Open tasks now, the oldest (by creation) first; ``overdue=true`` only the overdue
        ones, ``false`` only the others."""
        for dim, asked in (("owner", owner), ("team", team)):
            if asked is not None and not who.scope.allows(dim, asked):
                raise out_of_scope(f"{dim} {asked!r} is not in your scope")
        owners = who.scope.values("owner")
        found = await people.tasks.open(
            owner=owner, team=team, overdue=overdue, limit=limit, owners=owners
        )
        return [TaskItem.of(t) for t in found]

    @router.get(
        "/revisits/compliance", response_model=RevisitCompliance, summary="Revisit compliance"
    )
    async def revisit_compliance(
        dim: RevisitDimension = "all", value: str | None = None, who: Caller = Who
    ) -> RevisitCompliance:
        """The share of subjects in their revisit cadence now (by each one's latest status),
        overall, by tier and by team; of one owner, team or tier with ``dim`` and ``value``."""
        if dim in ("owner", "team") and not who.scope.allows(dim, value):
            raise out_of_scope(f"{dim} {value!r} is not in your scope")
        return await people.compliance(dim, value, who.scope)

    @router.get("/subjects/unowned", response_model=Unowned, summary="Subjects without owner")
    async def unowned(who: Caller = Who) -> Unowned:
        """How many customers have no owner, and channels no manager, now (for admins)."""
        who.require_everything("subjects without owner")
        return await people.unowned()

    return router


def journeys_router(figures: JourneyFigures, Who: Any) -> APIRouter:
    """For admins: a journey's figures are not split by owner."""
    router = APIRouter()

    def window(
        since: datetime | None, until: datetime | None
    ) -> tuple[datetime | None, datetime | None]:
        """All time without ``from`` and ``to``; else from ``from`` (all time) to ``to`` (now)."""
        if since is None and until is None:
            return None, None
        until = until or datetime.now(UTC) + timedelta(days=1)
        return since or datetime(1970, 1, 1, tzinfo=UTC), until

    @router.get("/journeys", response_model=list[JourneySummary], summary="Journeys")
    async def journeys(
        since: Annotated[datetime | None, Query(alias="from")] = None,
        until: Annotated[datetime | None, Query(alias="to")] = None,
        who: Caller = Who,
    ) -> list[JourneySummary]:
        """Every journey seen, by name: the runs that entered and that left (by reason), the
        conversion rate (converted / entered) and the runs in it now. All time, or in the
        window from ``from`` to ``to``."""
        who.require_everything("journeys")
        return await figures.summaries(*window(since, until))

    @router.get("/journeys/{name}", response_model=JourneyDetail, summary="A journey and its steps")
    async def journey(
        name: Annotated[str, Path(max_length=64)],
        since: Annotated[datetime | None, Query(alias="from")] = None,
        until: Annotated[datetime | None, Query(alias="to")] = None,
        who: Caller = Who,
    ) -> JourneyDetail:
        """A journey's totals, per version, and its steps in the order they were first seen:
        completions, sends, unrouted sends, outcomes and the runs waiting at each now."""
        who.require_everything("journeys")
        found = await figures.detail(name, *window(since, until))
        if found is None:
            raise HTTPException(status_code=404, detail=f"no journey {name!r}")
        return found

    return router
