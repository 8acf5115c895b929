"""The dashboard at ``/``: server-rendered HTML with inline SVG charts — no scripts, no CDN,
nothing to download — in English or Chinese (``?lang=zh`` or the browser's language).

Pages: overview (the maintenance report, daily activity, manual work saved by month), channels
(with their health week by week), owners, rules, and the customers at risk.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

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
STYLE = (
    "body{font-family:system-ui,'PingFang SC','Microsoft YaHei',sans-serif;margin:0;"
    "color:#1f2933;background:#f5f7fa}header{background:#243b53;color:#fff;padding:12px 24px}"
    "header a{color:#d9e2ec;margin-right:16px;text-decoration:none}header a.on{color:#fff;"
    "font-weight:bold}main{padding:24px;max-width:1100px}.cards{display:flex;flex-wrap:wrap;"
    "gap:12px}.card{background:#fff;border:1px solid #d9e2ec;border-radius:6px;padding:12px 16px;"
    "min-width:150px}.card b{display:block;font-size:22px}table{border-collapse:collapse;"
    "background:#fff;margin-top:12px}td,th{border:1px solid #d9e2ec;padding:6px 10px;"
    "text-align:right}td:first-child,th:first-child{text-align:left}"
)


def language(request: Request) -> str:
    asked = request.query_params.get("lang") or request.headers.get("accept-language", "")
    return "zh" if asked.lower().startswith("zh") else "en"


def bars(
    days: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    t: Mapping[str, str],
    label_format: str = "%m-%d",
) -> str:
    """A grouped bar chart as inline SVG: one group per period, one bar per counter."""
    width, height, colors = 900, 220, ["#2680c2", "#3ebd93", "#e12d39", "#f0b429"]
    if not days:
        return f"<p>{escape(t['none'])}</p>"
    peak = max([1, *(d["counters"].get(n, 0) for d in days for n in names)])
    step = width / len(days)
    bar = min(48.0, max(2.0, step / (len(names) + 1)))  # one period alone: no giant bars
    parts = [f'<svg role="img" viewBox="0 0 {width} {height + 40}" width="100%">']
    for i, day in enumerate(days):
        for j, name in enumerate(names):
            value = day["counters"].get(name, 0)
            h = height * value / peak
            x, y = i * step + j * bar, height - h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar * 0.9:.1f}" height="{h:.1f}" '
                f'fill="{colors[j % len(colors)]}"><title>{escape(t.get(name, name))}: '
                f"{value}</title></rect>"
            )
        label = day["start"].strftime(label_format)
        parts.append(f'<text x="{i * step:.1f}" y="{height + 16}" font-size="11">{label}</text>')
    legend = "".join(
        f'<tspan fill="{colors[j % len(colors)]}">■ {escape(t.get(n, n))}  </tspan>'
        for j, n in enumerate(names)
    )
    parts.append(f'<text x="0" y="{height + 34}" font-size="12">{legend}</text></svg>')
    return "".join(parts)


def page(t: Mapping[str, str], lang: str, current: str, body: str) -> HTMLResponse:
    links = "".join(
        f'<a class="{"on" if key == current else ""}" href="{href}?lang={lang}">'
        f"{escape(t[key])}</a>"
        for key, href in (
            ("overview", "/"),
            ("channels", "/channels"),
            ("owners", "/owners"),
            ("rules", "/rules"),
            ("at-risk", "/at-risk"),
        )
    )
    other = "en" if lang == "zh" else "zh"
    html = (
        f'<!doctype html><html lang="{"zh-CN" if lang == "zh" else "en"}"><head>'
        f'<meta charset="utf-8"><title>{escape(t["title"])}</title><style>{STYLE}</style>'
        f"</head><body><header><strong>{escape(t['title'])}</strong> &nbsp; {links}"
        f'<a href="?lang={other}">{"English" if other == "en" else "中文"}</a></header>'
        f"<main>{body}</main></body></html>"
    )
    return HTMLResponse(html)


def dashboard_router(
    reporting: Reporting,
    attribution: Attribution,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    aggregates = reporting.aggregates

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
        cards = "".join(
            f'<div class="card">{escape(t[k])}<b>{_figure(figures[k], k)}</b></div>'
            for k in (
                "renewal_rate",
                "reminder_conversion",
                "churn_recoveries",
                "delivery_success_rate",
                "automation_coverage",
                "hours_saved",
                "money_saved",
            )
        )
        days = await aggregates.series("day", "all", since, until)
        counters = figures["counters"]
        table = _table(t, [("", counters)], OVERVIEW, "")
        chart = bars(days[-14:], ["actions", "deliveries.sent", "deliveries.failed"], t)
        months = await reporting.savings("month", "all", since, until)
        saved = _rows(
            [t["month"], t["hours_saved"], f"{t['money_saved']} ({reporting.currency})"],
            [
                [
                    f"{m.start.astimezone(zone(aggregates.timezone)):%Y-%m}",
                    m.hours_saved,
                    m.money_saved,
                ]
                for m in months
            ],
            t,
        )
        body = (
            f"<h2>{since:%Y-%m-%d} &ndash; {until:%Y-%m-%d}</h2><div class=cards>{cards}</div>"
            f"<h2>{escape(t['daily'])}</h2>{chart}{table}"
            f"<h2>{escape(t['saved_by_month'])}</h2>{saved}"
        )
        return page(t, lang, "overview", body)

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
        body = f"<h2>{escape(t[key])} · {since:%Y-%m-%d} &ndash; {until:%Y-%m-%d}</h2>" + _table(
            t, summary, COLUMNS[dim], t["name"]
        )
        return page(t, lang, key, body + await extra(key, since, until, t))

    async def extra(key: str, since: datetime, until: datetime, t: Mapping[str, str]) -> str:
        if key != "channels":
            return ""
        return await channel_health(since, until, t)

    async def channel_health(since: datetime, until: datetime, t: Mapping[str, str]) -> str:
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
        grid = _rows(
            [t["name"], *(f"{s.astimezone(tz):%m-%d}" for s in starts)],
            [
                [channel, *(cell(weeks_of.get(s)) for s in starts)]
                for channel, weeks_of in sorted(cells.items())
            ],
            t,
        )
        return f"<h2>{escape(t['health'])}</h2>{chart}<p>{escape(t['health_note'])}</p>{grid}"

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
        rows = "".join(
            f"<tr><td>{escape(s.removeprefix('customer:'))}</td><td>{escape(d.get('owner', ''))}"
            f"</td><td>{escape(d.get('risk', ''))}</td></tr>"
            for s, d in sorted(found.items(), key=lambda kv: kv[1].get("risk", ""), reverse=True)
        )
        head = f"<tr><th>{t['customer']}</th><th>{t['owner']}</th><th>{t['risk']}</th></tr>"
        table = f"<table>{head}{rows}</table>" if rows else f"<p>{escape(t['none'])}</p>"
        return page(t, lang, "at-risk", f"<h2>{escape(t['at-risk'])}</h2>{table}")

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


def _rows(head: Sequence[str], rows: Sequence[Sequence[Any]], t: Mapping[str, str]) -> str:
    """A plain table: a header and rows of cells (numbers formatted, text escaped)."""
    if not rows:
        return f"<p>{escape(t['none'])}</p>"
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{v:,.2f}</td>" if isinstance(v, float) else f"<td>{escape(str(v))}</td>"
            for v in row
        )
        + "</tr>"
        for row in rows
    )
    return f'<div style="overflow-x:auto"><table><tr>{th}</tr>{body}</table></div>'


def _table(
    t: Mapping[str, str],
    rows: Sequence[tuple[str, Mapping[str, int]]],
    columns: Sequence[str],
    first: str,
) -> str:
    if not rows:
        return f"<p>{escape(t['none'])}</p>"
    head = "".join(f"<th>{escape(t.get(c, c))}</th>" for c in columns)
    body = "".join(
        f"<tr><td>{escape(name)}</td>"
        + "".join(f"<td>{counters.get(c, 0):,}</td>" for c in columns)
        + "</tr>"
        for name, counters in rows
    )
    table = f"<table><tr><th>{escape(first)}</th>{head}</tr>{body}</table>"
    return f'<div style="overflow-x:auto">{table}</div>'
