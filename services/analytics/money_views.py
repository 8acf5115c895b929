"""The dashboard's money pages: Costs & ROI (per channel and per owner over the window, with the
budgets of the current periods as bars of what is used and what is forecast) and the archive
of the managers' reports. Shaped here into plain values, drawn by ``templates/costs.html`` and
``templates/reports.html``; every figure is of the caller's scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from services.analytics.budgets import BudgetStatus
from services.analytics.callers import Caller
from services.analytics.costs import Costing, RoiRow
from services.analytics.dashboard import ENVIRONMENT, _instant, _table, language, render
from services.analytics.labels import TEXT
from services.analytics.reports import Reports
from shared.events.fields import zone

BAR_WIDTH = 300  # px of a budget's bar at 100 % of its amount (the forecast may go past it)


def money_cells(rows: Sequence[RoiRow], t: dict[str, str]) -> dict[str, Any]:
    """One row per value and currency (and the converted figures, when there is a rate table)."""
    head = [t["name"], t["currency"], t["revenue"], t["sell_through"], t["cost"], t["roi"]]
    cells = []
    for r in rows:
        money = r.money
        every = [*money.by_currency, *([money.converted] if money.converted else [])]
        for c in every:
            roi = "—" if c.roi is None else f"{c.roi:.2f}"
            per = (
                "—" if c.cost_per_active_customer is None else f"{c.cost_per_active_customer:,.2f}"
            )
            cells.append(
                [
                    r.value,
                    c.currency,
                    f"{c.revenue:,.2f}",
                    f"{c.sell_through:,.2f}",
                    f"{c.cost:,.2f}",
                    roi,
                    per,
                ]
            )
    return _table([*head, t["cost_per_active"]], cells)


def budget_bars(found: Sequence[BudgetStatus]) -> list[dict[str, Any]]:
    """A bar per budget: used (green, red once over) and the forecast's mark, in px."""
    bars = []
    for s in found:
        used = float(s.used_share or 0)
        forecast = float(s.forecast_share or 0)
        bars.append(
            {
                "name": s.name,
                "scope": f"{s.scope} {s.scope_id}",
                "period": s.period_id,
                "figures": f"{s.used:,.2f} / {s.amount:,.2f} {s.currency}",
                "forecast": f"{s.forecast:,.2f} {s.currency}",
                "used_px": f"{min(used, 1.5) * BAR_WIDTH:.0f}",
                "forecast_px": f"{min(forecast, 1.5) * BAR_WIDTH:.0f}",
                "full_px": BAR_WIDTH,
                "over": s.overrun_forecast,
                "color": "#e12d39" if used > 1 else "#3ebd93",
                "uncounted": ", ".join(f"{v:,.2f} {c}" for c, v in s.uncounted.items()),
            }
        )
    return bars


def money_pages_router(
    costing: Costing,
    reports: Reports,
    caller: Callable[..., Awaitable[Caller]],
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> APIRouter:
    Who = Depends(caller)  # a default, so the route's annotation stays a plain type
    router = APIRouter(include_in_schema=False, dependencies=[Depends(caller)])
    costs_page, reports_page = (
        ENVIRONMENT.get_template(f"{name}.html") for name in ("costs", "reports")
    )
    tz = zone(costing.reporting.aggregates.timezone)

    @router.get("/costs", response_class=HTMLResponse)
    async def costs(request: Request, who: Caller = Who) -> HTMLResponse:
        lang = language(request)
        t = TEXT[lang]
        until = _instant(request.query_params.get("to")) or clock() + timedelta(days=1)
        try:
            since = _instant(request.query_params.get("from")) or until - timedelta(days=92)
        except OverflowError:  # ?to= at the calendar's start
            until = clock() + timedelta(days=1)
            since = until - timedelta(days=92)
        overall = await costing.total(since, until, "all", scope=who.scope)
        by_channel = await costing.total(since, until, "channel", scope=who.scope)
        by_owner = await costing.total(since, until, "owner", scope=who.scope)
        budgets = await costing.statuses(who.scope)
        note = next((r.money.rates_used for r in overall if r.money.rates_used), None)
        return render(
            costs_page,
            lang,
            "costs",
            who,
            since=f"{since:%Y-%m-%d}",
            until=f"{until:%Y-%m-%d}",
            overall=money_cells(overall, t),
            by_channel=money_cells(by_channel, t),
            by_owner=money_cells(by_owner, t),
            budgets=budget_bars(budgets),
            rates_note=note,
        )

    @router.get("/reports", response_class=HTMLResponse)
    async def archive(request: Request, who: Caller = Who) -> HTMLResponse:
        lang = language(request)
        t = TEXT[lang]
        found = await reports.archived(who.scope.values("owner"))
        rows = [
            {
                "period": doc["period"],
                "kind": t.get(f"report_{doc['kind']}", doc["kind"]),
                "manager": doc["manager"],
                "created": f"{doc['created_at'].replace(tzinfo=UTC).astimezone(tz):%Y-%m-%d %H:%M}",
                "status": t.get(f"report_{doc.get('status', 'prepared')}", doc.get("status", "")),
                "key": doc["_id"],
            }
            for doc in found
        ]
        return render(reports_page, lang, "reports", who, reports=rows)

    return router
