"""The analytics JSON API: time series of every counter by dimension and period, the maintenance
report, the manual work saved, and CSV export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel

from services.analytics.report import Report, Reporting, Saving

Granularity = Literal["hour", "day", "week", "month"]
Dimension = Literal["all", "rule", "kind", "owner", "channel", "tier"]


class Row(BaseModel):
    start: datetime
    dim: str
    value: str
    counters: dict[str, int]


def analytics_router(reporting: Reporting) -> APIRouter:
    aggregates = reporting.aggregates
    router = APIRouter(prefix="/v1", tags=["analytics"])

    def window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
        until = until or datetime.now(UTC) + timedelta(days=1)
        return since or until - timedelta(days=31), until

    @router.get("/series", response_model=list[Row], summary="Counters per bucket")
    async def series(
        granularity: Granularity = "day",
        dim: Dimension = "all",
        value: str | None = None,
        since: Annotated[datetime | None, Query(alias="from")] = None,
        until: Annotated[datetime | None, Query(alias="to")] = None,
    ) -> list[dict[str, Any]]:
        start, end = window(since, until)
        return await aggregates.series(granularity, dim, start, end, value)

    @router.get("/series.csv", summary="Counters per bucket, as CSV")
    async def series_csv(
        granularity: Granularity = "day",
        dim: Dimension = "all",
        value: str | None = None,
        since: Annotated[datetime | None, Query(alias="from")] = None,
        until: Annotated[datetime | None, Query(alias="to")] = None,
    ) -> Response:
        start, end = window(since, until)
        rows = await aggregates.series(granularity, dim, start, end, value)
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
    ) -> list[Saving]:
        """Hours and money saved per period and per channel or owner (``dim``)."""
        start, end = window(since, until)
        return await reporting.savings(granularity, dim, start, end, value)

    @router.get("/report", response_model=Report, summary="The maintenance report")
    async def report(
        dim: Dimension = "all",
        value: str | None = None,
        since: Annotated[datetime | None, Query(alias="from")] = None,
        until: Annotated[datetime | None, Query(alias="to")] = None,
    ) -> Report:
        start, end = window(since, until)
        return await reporting.report(start, end, dim, value)

    return router
