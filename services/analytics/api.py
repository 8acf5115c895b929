"""The analytics JSON API: time series of every counter by dimension, the maintenance report,
and CSV export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel

from services.analytics.aggregates import Aggregates, totals

Granularity = Literal["hour", "day"]
Dimension = Literal["all", "rule", "kind", "owner", "channel", "tier"]


class Row(BaseModel):
    start: datetime
    dim: str
    value: str
    counters: dict[str, int]


class Report(BaseModel):
    since: datetime
    until: datetime
    counters: dict[str, int]
    renewal_rate: float | None
    delivery_success_rate: float | None
    automation_coverage: float | None
    hours_saved: float
    money_saved: float
    currency: str


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


async def maintenance_report(
    aggregates: Aggregates,
    since: datetime,
    until: datetime,
    *,
    minutes_saved: dict[str, float],
    hourly_cost: float,
    currency: str,
    dim: str = "all",
    value: str | None = None,
) -> Report:
    c = totals(await aggregates.series("day", dim, since, until, value))
    hours = sum(c.get(f"touches.{kind}", 0) * m for kind, m in minutes_saved.items()) / 60
    return Report(
        since=since,
        until=until,
        counters=c,
        renewal_rate=_ratio(c.get("renewals.renewed", 0), c.get("renewals.due", 0)),
        delivery_success_rate=_ratio(
            c.get("deliveries.sent", 0),
            c.get("deliveries.sent", 0) + c.get("deliveries.failed", 0),
        ),
        automation_coverage=_ratio(
            c.get("touches.automated", 0),
            c.get("touches.automated", 0) + c.get("touches.manual", 0),
        ),
        hours_saved=round(hours, 2),
        money_saved=round(hours * hourly_cost, 2),
        currency=currency,
    )


def analytics_router(
    aggregates: Aggregates, minutes_saved: dict[str, float], hourly_cost: float, currency: str
) -> APIRouter:
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

    @router.get("/report", response_model=Report, summary="The maintenance report")
    async def report(
        dim: Dimension = "all",
        value: str | None = None,
        since: Annotated[datetime | None, Query(alias="from")] = None,
        until: Annotated[datetime | None, Query(alias="to")] = None,
    ) -> Report:
        start, end = window(since, until)
        return await maintenance_report(
            aggregates,
            start,
            end,
            minutes_saved=minutes_saved,
            hourly_cost=hourly_cost,
            currency=currency,
            dim=dim,
            value=value,
        )

    return router
