"""The dashboard at ``/``: server-rendered HTML with inline SVG charts — no scripts, no CDN,
nothing to download — in English or Chinese (``?lang=zh`` or the browser's language).

Pages: overview (the maintenance report, daily activity, manual work saved by month), channels
(with their health week by week), owners, rules, and the customers at risk.

Python shapes the data into plain values; the HTML is in ``templates/`` (see ``base.html``),
rendered with autoescaping: every value from data is escaped by Jinja, none by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2.sandbox import ImmutableSandboxedEnvironment

from services.analytics.aggregates import Attribution, totals
from services.analytics.report import Reporting
from shared.events.fields import zone

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "Upkeep analytics",
        "overview": "Overview",
        "channels": "Channels",
        "owners": "Owners",
        "rules": "Rules",
        "at-risk": "At risk",
        "renewal_rate": "Renewal rate",
        "reminder_conversion": "Reminder → renewal",
        "churn_recoveries": "Churn recoveries",
        "saved_by_month": "Manual work saved, by month",
        "month": "Month",
        "health": "Channel health, week by week",
        "health_note": "Orders per week; ⚠ the channel was flagged that week.",
        "week": "Week of",
        "delivery_success_rate": "Delivery success",
        "automation_coverage": "Automation coverage",
        "hours_saved": "Hours saved",
        "money_saved": "Money saved",
        "daily": "Daily activity",
        "events": "Events",
        "actions": "Actions",
        "deliveries.sent": "Sent",
        "deliveries.failed": "Failed",
        "orders": "Orders",
        "renewals.due": "Renewals due",
        "renewals.renewed": "Renewed",
        "renewals.lost": "Lost",
        "customers.new": "New customers",
        "customers.at_risk": "Entered risk",
        "customers.recovered": "Recovered",
        "channels.flagged": "Channels flagged",
        "followups.done": "Follow-ups",
        "touches.automated": "Automated touches",
        "touches.manual": "Manual touches",
        "channel_orders": "Channel orders",
        "name": "Name",
        "none": "Nothing yet.",
        "customer": "Customer",
        "owner": "Owner",
        "risk": "Risk",
    },
    "zh": {
        "title": "Upkeep 数据分析",
        "overview": "总览",
        "channels": "渠道",
        "owners": "负责人",
        "rules": "规则",
        "at-risk": "流失风险",
        "renewal_rate": "续约率",
        "reminder_conversion": "提醒后续约率",
        "churn_recoveries": "挽回客户",
        "saved_by_month": "每月节省的人工",
        "month": "月份",
        "health": "渠道健康度（按周）",
        "health_note": "每周订单数；⚠ 表示该周渠道被预警。",
        "week": "周起始",
        "delivery_success_rate": "送达成功率",
        "automation_coverage": "自动化覆盖率",
        "hours_saved": "节省工时",
        "money_saved": "节省成本",
        "daily": "每日动态",
        "events": "事件",
        "actions": "动作",
        "deliveries.sent": "已发送",
        "deliveries.failed": "失败",
        "orders": "订单",
        "renewals.due": "待续约",
        "renewals.renewed": "已续约",
        "renewals.lost": "已流失",
        "customers.new": "新客户",
        "customers.at_risk": "进入风险",
        "customers.recovered": "已挽回",
        "channels.flagged": "预警渠道",
        "followups.done": "售后回访",
        "touches.automated": "自动触达",
        "touches.manual": "人工触达",
        "channel_orders": "渠道订单",
        "name": "名称",
        "none": "暂无数据。",
        "customer": "客户",
        "owner": "负责人",
        "risk": "风险",
    },
}
PAGES = {"channels": "channel", "owners": "owner", "rules": "rule"}
OVERVIEW = [
    "orders",
    "customers.new",
    "renewals.due",
    "renewals.renewed",
    "renewals.lost",
    "customers.at_risk",
    "customers.recovered",
    "channels.flagged",
    "followups.done",
    "actions",
    "deliveries.sent",
    "deliveries.failed",
    "touches.automated",
    "touches.manual",
]
COLUMNS = {
    "channel": ["channel_orders", "channels.flagged", "orders", "customers.new"],
    "owner": ["actions", "deliveries.sent", "renewals.due", "renewals.renewed", "followups.done"],
    "rule": ["actions", "deliveries.sent", "deliveries.failed", "touches.automated"],
}
NAV = [("overview", "/"), *((key, f"/{key}") for key in ("channels", "owners", "rules", "at-risk"))]
HTML_LANG = {"en": "en", "zh": "zh-CN"}
SWITCH = {"en": ("zh", "中文"), "zh": ("en", "English")}  # the other language, in its own words
CARDS = [
    "renewal_rate",
    "reminder_conversion",
    "churn_recoveries",
    "delivery_success_rate",
    "automation_coverage",
    "hours_saved",
    "money_saved",
]
COLORS = ["#2680c2", "#3ebd93", "#e12d39", "#f0b429"]

# One environment for the process, as the notifier's: the immutable sandbox, strict undefined
# variables (a template that names a missing value fails instead of printing nothing), and
# autoescaping of everything a template prints; the templates only ever receive plain values.
ENVIRONMENT = ImmutableSandboxedEnvironment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates"), encoding="utf-8"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
)


def language(request: Request) -> str:
    asked = request.query_params.get("lang") or request.headers.get("accept-language", "")
    return "zh" if asked.lower().startswith("zh") else "en"


def bars(
    periods: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    t: Mapping[str, str],
    label_format: str = "%m-%d",
) -> dict[str, Any] | None:
    """The ``bars`` macro's chart, None when there is no period: one group of bars per period,
    one bar per counter of ``names``, scaled to the highest; coordinates formatted for SVG."""
    if not periods:
        return None
    width, height = 900, 220
    peak = max([1, *(p["counters"].get(n, 0) for p in periods for n in names)])
    step = width / len(periods)
    bar = min(48.0, max(2.0, step / (len(names) + 1)))  # one period alone: no giant bars
    legend = [(COLORS[j % len(COLORS)], t.get(n, n)) for j, n in enumerate(names)]
    drawn = []
    for i, period in enumerate(periods):
        for j, (name, (color, label)) in enumerate(zip(names, legend, strict=True)):
            value = period["counters"].get(name, 0)
            h = height * value / peak
            x, y = f"{i * step + j * bar:.1f}", f"{height - h:.1f}"
            drawn.append(dict(x=x, y=y, height=f"{h:.1f}", color=color, label=label, value=value))
    labels = [(f"{i * step:.1f}", p["start"].strftime(label_format)) for i, p in enumerate(periods)]
    return {
        "width": width,
        "height": height,
        "bar_width": f"{bar * 0.9:.1f}",
        "bars": drawn,
        "labels": labels,
        "legend": legend,
    }


def render(template: jinja2.Template, lang: str, current: str, **values: Any) -> HTMLResponse:
    """A page in ``lang``: its template with the chrome's values and the page's own."""
    chrome = {"t": TEXT[lang], "lang": lang, "html_lang": HTML_LANG[lang], "nav": NAV}
    html = template.render(**chrome, current=current, switch=SWITCH[lang], **values)
    return HTMLResponse(html)


def dashboard_router(
    reporting: Reporting,
    attribution: Attribution,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    aggregates = reporting.aggregates
    # compiled once, here: a template that does not compile stops the service at start-up
    overview_page, dimension_page, channels_page, at_risk_page = (
        ENVIRONMENT.get_template(f"{name}.html")
        for name in ("overview", "dimension", "channels", "at_risk")
    )

    def window(request: Request) -> tuple[datetime, datetime]:
        """The last 30 days, or ``?from=…&to=…`` (ISO 8601)."""
        until = _instant(request.query_params.get("to")) or clock() + timedelta(days=1)
        since = _instant(request.query_params.get("from")) or until - timedelta(days=31)
        return since, until

    @router.get("/", response_class=HTMLResponse)
    async def overview(request: Request) -> HTMLResponse:
        lang = language(request)
        t = TEXT[lang]
        since, until = window(request)
        figures = (await reporting.report(since, until)).model_dump()
        days = await aggregates.series("day", "all", since, until)
        months = await reporting.savings("month", "all", since, until)
        tz = zone(aggregates.timezone)
        return render(
            overview_page,
            lang,
            "overview",
            since=f"{since:%Y-%m-%d}",
            until=f"{until:%Y-%m-%d}",
            cards=[(t[k], _figure(figures[k], k)) for k in CARDS],
            chart=bars(days[-14:], ["actions", "deliveries.sent", "deliveries.failed"], t),
            counters=_counters(t, [("", figures["counters"])], OVERVIEW, ""),
            saved=_table(
                [t["month"], t["hours_saved"], f"{t['money_saved']} ({reporting.currency})"],
                [[f"{m.start.astimezone(tz):%Y-%m}", m.hours_saved, m.money_saved] for m in months],
            ),
        )

    async def by_dimension(request: Request, key: str) -> HTMLResponse:
        lang = language(request)
        t = TEXT[lang]
        since, until = window(request)
        dim = PAGES[key]
        rows = await aggregates.series("day", dim, since, until)
        grouped: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            grouped.setdefault(row["value"], []).append(row)
        summary = sorted(((v, totals(rs)) for v, rs in grouped.items()), key=lambda x: x[0])
        values: dict[str, Any] = {"since": f"{since:%Y-%m-%d}", "until": f"{until:%Y-%m-%d}"}
        values["summary"] = _counters(t, summary, COLUMNS[dim], t["name"])
        if key != "channels":
            return render(dimension_page, lang, key, **values)
        chart, health = await channel_health(since, until, t)
        return render(channels_page, lang, key, **values, chart=chart, health=health)

    async def channel_health(
        since: datetime, until: datetime, t: Mapping[str, str]
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Per channel, week by week: its orders, and whether it was flagged."""
        weeks = await aggregates.series("week", "all", since, until)
        chart = bars(weeks[-12:], ["channel_orders", "orders", "channels.flagged"], t, "%m-%d")
        per_channel = await aggregates.series("week", "channel", since, until)
        starts = sorted({r["start"] for r in per_channel})[-12:]
        cells: dict[str, dict[datetime, Mapping[str, int]]] = {}
        for r in per_channel:
            cells.setdefault(r["value"], {})[r["start"]] = r["counters"]

        def cell(counters: Mapping[str, int] | None) -> str:
            if counters is None:
                return "0"
            orders = counters.get("channel_orders", 0) + counters.get("orders", 0)
            return f"{orders}{' ⚠' if counters.get('channels.flagged') else ''}"

        tz = zone(aggregates.timezone)
        grid = _table(
            [t["name"], *(f"{s.astimezone(tz):%m-%d}" for s in starts)],
            [
                [channel, *(cell(weeks_of.get(s)) for s in starts)]
                for channel, weeks_of in sorted(cells.items())
            ],
        )
        return chart, grid

    @router.get("/channels", response_class=HTMLResponse)
    async def channels(request: Request) -> HTMLResponse:
        return await by_dimension(request, "channels")

    @router.get("/owners", response_class=HTMLResponse)
    async def owners(request: Request) -> HTMLResponse:
        return await by_dimension(request, "owners")

    @router.get("/rules", response_class=HTMLResponse)
    async def rules(request: Request) -> HTMLResponse:
        return await by_dimension(request, "rules")

    @router.get("/at-risk", response_class=HTMLResponse)
    async def at_risk(request: Request) -> HTMLResponse:
        lang = language(request)
        t = TEXT[lang]
        found = await attribution.at_risk()
        riskiest = sorted(found.items(), key=lambda kv: kv[1].get("risk", ""), reverse=True)
        customers = _table(
            [t["customer"], t["owner"], t["risk"]],
            [
                [s.removeprefix("customer:"), d.get("owner", ""), d.get("risk", "")]
                for s, d in riskiest
            ],
        )
        return render(at_risk_page, lang, "at-risk", customers=customers)

    return router


def _instant(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None  # a bad parameter falls back to the default window
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _figure(value: Any, key: str) -> str:
    if value is None:
        return "—"
    if key.endswith(("_rate", "_conversion", "_coverage")):
        return f"{value * 100:.1f}%"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.1f}"


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """The ``table`` macro's table: cells as shown, floats with two decimals."""
    cells = [[f"{v:,.2f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    return {"head": list(head), "rows": cells}


def _counters(
    t: Mapping[str, str],
    rows: Sequence[tuple[str, Mapping[str, int]]],
    columns: Sequence[str],
    first: str,
) -> dict[str, Any]:
    """A table of the ``columns`` counters (0 when absent) of each named row."""
    head = [first, *(t.get(c, c) for c in columns)]
    return _table(head, [[name, *(f"{n.get(c, 0):,}" for c in columns)] for name, n in rows])
