"""The money side of the analytics API: cost and ROI per period and per channel, owner or team
(JSON and CSV), the budgets with their use and forecast, and the managers' reports — preview,
send now (admins), and the archive. Every answer is cut to the caller's scope."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Body, HTTPException, Path, Query
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from services.analytics.budgets import BudgetStatus
from services.analytics.callers import Caller
from services.analytics.costs import Costing, RoiRow
from services.analytics.reports import Kind, Period, Reports
from services.analytics.scope import out_of_scope
from services.analytics.staff import Directory
from services.notifier.templates import Templates
from shared.events.fields import zone

RoiGranularity = Literal["week", "month"]
MoneyDimension = Literal["all", "owner", "channel", "team"]
CSV_HEAD = [
    "start",
    "dimension",
    "value",
    "currency",
    "revenue",
    "sell_through",
    "cost",
    "roi",
    "cost_per_active_customer",
    "active_customers",
]
KindPath = Annotated[Kind, Path(description="weekly or monthly")]


class SendNow(BaseModel):
    manager_id: str = Field(min_length=1, max_length=128)
    period: str | None = Field(
        None, max_length=8, description="2026-W48 or 2026-11 (default: the last complete one)"
    )


class SentReport(BaseModel):
    key: str
    manager_id: str
    kind: str
    period: str
    resend: bool


class ArchivedReport(BaseModel):
    key: str
    kind: str
    period: str
    manager_id: str
    created_at: datetime
    status: str
    via: str | None = None


def _window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    until = until or datetime.now(UTC) + timedelta(days=1)
    try:
        return since or until - timedelta(days=92), until
    except OverflowError:
        raise HTTPException(422, "the window is outside the calendar") from None


def money_router(
    costing: Costing, reports: Reports, staff: Directory, templates: Templates, Who: Any
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["costs and reports"])

    @router.get("/costs", response_model=list[RoiRow], summary="Cost and ROI per period")
    async def costs(
        granularity: RoiGranularity = "month",
        dim: MoneyDimension = "all",
        value: Annotated[str | None, Query(max_length=128)] = None,
        since: Annotated[datetime | None, Query(alias="from")] = None,
        until: Annotated[datetime | None, Query(alias="to")] = None,
        who: Caller = Who,
    ) -> list[RoiRow]:
        """Per week or month, and per channel, owner or team with ``dim``: revenue (orders),
        sell-through, cost by category, ROI = (revenue - cost) / cost, cost per active
        customer, the automated touches and the manual cost they replaced. Per currency; also
        converted when a rate table is configured (and then which rates were used)."""
        start, end = _window(since, until)
        return await costing.roi(granularity, dim, start, end, value, who.scope)

    @router.get("/costs.csv", summary="Cost and ROI per period, as CSV")
    async def costs_csv(
        granularity: RoiGranularity = "month",
        dim: MoneyDimension = "all",
        value: Annotated[str | None, Query(max_length=128)] = None,
        since: Annotated[datetime | None, Query(alias="from")] = None,
        until: Annotated[datetime | None, Query(alias="to")] = None,
        who: Caller = Who,
    ) -> Response:
        start, end = _window(since, until)
        rows = await costing.roi(granularity, dim, start, end, value, who.scope)
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(CSV_HEAD)
        for r in rows:
            money = r.money
            every = [*money.by_currency, *([money.converted] if money.converted else [])]
            for c in every:
                w.writerow(
                    [
                        r.start.isoformat() if r.start else "",
                        r.dim,
                        r.value,
                        c.currency,
                        c.revenue,
                        c.sell_through,
                        c.cost,
                        "" if c.roi is None else c.roi,
                        "" if c.cost_per_active_customer is None else c.cost_per_active_customer,
                        money.active_customers,
                    ]
                )
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8")

    @router.get("/budgets", response_model=list[BudgetStatus], summary="Budgets and forecasts")
    async def budgets(all_periods: bool = False, who: Caller = Who) -> list[BudgetStatus]:
        """The budgets of the current periods (``all_periods``: every one known) the caller may
        see, with the cost used of each, the forecast for its period at the run rate so far,
        and whether it is forecast to overrun."""
        return await costing.statuses(who.scope, current_only=not all_periods)

    async def manager_and_period(manager_id: str, kind: Kind, period: str | None) -> Any:
        found = (await staff.get([manager_id])).get(manager_id)
        if found is None:
            raise HTTPException(404, f"no member of staff {manager_id!r}")
        if period is None:
            today = datetime.now(UTC).astimezone(zone(found.timezone)).date()
            return found, Period.last_complete(kind, today)
        try:
            return found, Period.parse(kind, period)
        except ValueError:
            raise HTTPException(422, f"not a {kind} period: {period!r}") from None

    @router.post("/reports/{kind}:send-now", response_model=SentReport, summary="Send a report now")
    async def send_now(
        kind: KindPath, body: Annotated[SendNow, Body()], who: Caller = Who
    ) -> SentReport:
        """For admins: build a manager's report for a period and send it at once. A period
        sent before is sent again as a resend (its own key); otherwise the scheduler will not
        send it a second time."""
        who.require_admin()
        manager, period = await manager_and_period(body.manager_id, kind, body.period)
        if not reports.complete(manager, period):
            raise HTTPException(409, f"{period.label} is not over yet: its report is not due")
        key, resend = await reports.send_now(manager, period)
        return SentReport(
            key=key, manager_id=manager.staff_id, kind=kind, period=period.label, resend=resend
        )

    @router.get("/reports/{kind}/preview", summary="Preview a report")
    async def preview(
        kind: KindPath,
        manager_id: Annotated[str, Query(min_length=1, max_length=128)],
        period: Annotated[str | None, Query(max_length=8)] = None,
        format: Literal["html", "json", "csv"] = "html",
        who: Caller = Who,
    ) -> Response:
        """A manager's report for a period as it would be sent (HTML), its data (JSON) or its
        CSV attachment; for admins, and for a manager of their own (or a report's within
        their scope)."""
        # a report is a manager's view: an owner's own scope is smaller than it would show
        if not who.scope.everything and (
            who.principal.role == "owner" or not who.scope.owns(manager_id)
        ):
            raise out_of_scope(f"the report of {manager_id!r} is not in your scope")
        manager, wanted = await manager_and_period(manager_id, kind, period)
        built = await reports.build(manager, wanted)
        if format == "json":
            return Response(_json(built.data), media_type="application/json")
        if format == "csv":
            return Response(built.csv, media_type="text/csv; charset=utf-8")
        rendered = templates.render("manager_report", manager.locale, built.data)
        return HTMLResponse(rendered.html)

    @router.get("/reports", response_model=list[ArchivedReport], summary="The report archive")
    async def archive(
        limit: Annotated[int, Query(ge=1, le=500)] = 100, who: Caller = Who
    ) -> list[ArchivedReport]:
        """The reports sent, the newest first: every one for admins, those of the managers in
        the caller's scope otherwise."""
        found = await reports.archived(who.scope.values("owner"), limit)
        return [_archived(doc) for doc in found]

    @router.get("/reports/archive/{key}", summary="An archived report")
    async def archived(
        key: Annotated[str, Path(max_length=300)],
        format: Literal["html", "json", "csv"] = "html",
        who: Caller = Who,
    ) -> Response:
        doc = await reports.get(key)
        if doc is None or not who.scope.owns(doc.get("manager")):
            raise HTTPException(404, "no such report")  # out of scope looks like absent
        if format == "csv":
            return Response(doc["csv"], media_type="text/csv; charset=utf-8")
        if format == "json":
            return Response(_json(doc["data"]), media_type="application/json")
        locale = (await staff.get([doc["manager"]])).get(doc["manager"])
        rendered = templates.render(
            "manager_report", locale.locale if locale else "en", doc["data"]
        )
        return HTMLResponse(rendered.html)

    return router


def _json(data: Any) -> bytes:
    return orjson.dumps(data)


def _archived(doc: dict[str, Any]) -> ArchivedReport:
    at = doc["created_at"]
    return ArchivedReport(
        key=doc["_id"],
        kind=doc["kind"],
        period=doc["period"],
        manager_id=doc["manager"],
        created_at=at if at.tzinfo else at.replace(tzinfo=UTC),
        status=doc.get("status", "prepared"),
        via=doc.get("via"),
    )
