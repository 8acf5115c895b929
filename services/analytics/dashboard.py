"""The dashboard at ``/``: server-rendered HTML with inline SVG charts — no scripts, no CDN,
nothing to download — in English or Chinese (``?lang=zh`` or the browser's language).

Pages: overview (the maintenance report, tasks, revisit compliance and subjects without owner,
daily activity, manual work saved by month), channels (with their health week by week), owners,
rules, tasks (open and overdue, by owner and team, the oldest first), journeys (their runs and
each one's steps as a funnel: :mod:`services.analytics.journey_views`), and the customers at risk.

Python shapes the data into plain values; the HTML is in ``templates/`` (see ``base.html``),
rendered with autoescaping: every value from data is escaped by Jinja, none by hand. The labels
of both languages are in :mod:`services.analytics.labels`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from jinja2.sandbox import ImmutableSandboxedEnvironment

from services.analytics import journey_views
from services.analytics.aggregates import Attribution, totals
from services.analytics.callers import Caller
from services.analytics.labels import TEXT
from services.analytics.report import Reporting
from shared.events.fields import zone

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
    "tasks.created",
    "tasks.completed",
    "assignments",
    "assignments.reassigned",
]
COLUMNS = {
    "channel": ["channel_orders", "channels.flagged", "orders", "customers.new"],
    "owner": [
        "actions",
        "deliveries.sent",
        "renewals.due",
        "renewals.renewed",
        "followups.done",
        "tasks.created",
        "tasks.completed",
    ],
    "rule": ["actions", "deliveries.sent", "deliveries.failed", "touches.automated"],
}
NAV = [
    ("overview", "/"),
    *((key, f"/{key}") for key in ("channels", "owners", "rules", "tasks", "journeys", "at-risk")),
    ("costs", "/costs"),
    ("reports", "/reports"),
]
ADMIN_PAGES = ("rules", "journeys")  # figures not split by owner: for those who see everything
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
PEOPLE_CARDS = [
    "tasks_created",
    "tasks_completed",
    "tasks_overdue",
    "tasks_escalated",
    "median_hours_to_complete",
    "revisit_compliance",
    "unowned_customers",
    "unowned_channels",
]
TASKS_SHOWN = 200  # the open tasks the tasks page lists
JOURNEYS_SHOWN = 20  # the journeys whose steps the journeys page draws
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


def render(
    template: jinja2.Template, lang: str, current: str, who: Caller, **values: Any
) -> HTMLResponse:
    """A page in ``lang`` for ``who``: its template with the chrome's values (the pages they
    may open, who is signed in) and the page's own."""
    nav = [(k, path) for k, path in NAV if who.scope.everything or k not in ADMIN_PAGES]
    chrome = {"t": TEXT[lang], "lang": lang, "html_lang": HTML_LANG[lang], "nav": nav}
    html = template.render(
        **chrome,
        current=current,
        switch=SWITCH[lang],
        principal=who.principal,
        csrf=who.csrf,
        **values,
    )
    return HTMLResponse(html)


def dashboard_router(
    reporting: Reporting,
    attribution: Attribution,
    caller: Callable[..., Awaitable[Caller]],
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> APIRouter:
    """Every page needs a signed-in caller (``caller``: the dashboard's authenticating
    dependency, which sends others to sign in) and shows only what is in their scope."""
    Who = Depends(caller)  # a default, so the route's annotation stays a plain type
    router = APIRouter(include_in_schema=False, dependencies=[Depends(caller)])
    aggregates = reporting.aggregates
    # compiled once, here: a template that does not compile stops the service at start-up
    overview_page, dimension_page, channels_page, at_risk_page, tasks_page, journeys_page = (
        ENVIRONMENT.get_template(f"{name}.html")
        for name in ("overview", "dimension", "channels", "at_risk", "tasks", "journeys")
    )
    people = reporting.people
    tz = zone(aggregates.timezone)

    def when(moment: datetime | None) -> str:
        return f"{moment.astimezone(tz):%Y-%m-%d %H:%M}" if moment else ""

    def window(request: Request) -> tuple[datetime, datetime]:
        """The last 30 days, or ``?from=…&to=…`` (ISO 8601)."""
        until = _instant(request.query_params.get("to")) or clock() + timedelta(days=1)
        since = _instant(request.query_params.get("from")) or until - timedelta(days=31)
        return since, until

    @router.get("/", response_class=HTMLResponse)
    async def overview(request: Request, who: Caller = Who) -> HTMLResponse:
        lang = language(request)
        t = TEXT[lang]
        since, until = window(request)
        scope = who.scope
        figures = (await reporting.report(since, until, scope=scope)).model_dump()
        days = await reporting.counters("day", "all", since, until, scope=scope)
        months = await reporting.savings("month", "all", since, until, scope=scope)
        compliance = await people.compliance(scope=scope) if people is not None else None
        by_tier, by_team = (
            (_shares(t, t["tier"], compliance.by_tier), _shares(t, t["team"], compliance.by_team))
            if compliance is not None
            else (None, None)
        )
        return render(
            overview_page,
            lang,
            "overview",
            who,
            since=f"{since:%Y-%m-%d}",
            until=f"{until:%Y-%m-%d}",
            cards=[(t[k], _figure(figures[k], k)) for k in CARDS],
            people_cards=[(t[k], _figure(figures[k], k)) for k in PEOPLE_CARDS],
            by_tier=by_tier,
            by_team=by_team,
            chart=bars(days[-14:], ["actions", "deliveries.sent", "deliveries.failed"], t),
            counters=_counters(t, [("", figures["counters"])], OVERVIEW, ""),
            saved=_table(
                [t["month"], t["hours_saved"], f"{t['money_saved']} ({reporting.currency})"],
                [[f"{m.start.astimezone(tz):%Y-%m}", m.hours_saved, m.money_saved] for m in months],
            ),
        )

    async def by_dimension(request: Request, key: str, who: Caller = Who) -> HTMLResponse:
        lang = language(request)
        t = TEXT[lang]
        since, until = window(request)
        dim = PAGES[key]
        if key in ADMIN_PAGES:
            who.require_everything(f"figures by {dim}")
        rows = await reporting.counters("day", dim, since, until, scope=who.scope)
        grouped: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            grouped.setdefault(row["value"], []).append(row)
        summary = sorted(((v, totals(rs)) for v, rs in grouped.items()), key=lambda x: x[0])
        values: dict[str, Any] = {"since": f"{since:%Y-%m-%d}", "until": f"{until:%Y-%m-%d}"}
        values["summary"] = _counters(t, summary, COLUMNS[dim], t["name"])
        if key != "channels":
            return render(dimension_page, lang, key, who, **values)
        chart, health = await channel_health(since, until, t, who)
        return render(channels_page, lang, key, who, **values, chart=chart, health=health)

    async def channel_health(
        since: datetime, until: datetime, t: Mapping[str, str], who: Caller
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Per channel, week by week: its orders, and whether it was flagged."""
        weeks = await reporting.counters("week", "all", since, until, scope=who.scope)
        chart = bars(weeks[-12:], ["channel_orders", "orders", "channels.flagged"], t, "%m-%d")
        per_channel = await reporting.counters("week", "channel", since, until, scope=who.scope)
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
    async def channels(request: Request, who: Caller = Who) -> HTMLResponse:
        return await by_dimension(request, "channels", who)

    @router.get("/owners", response_class=HTMLResponse)
    async def owners(request: Request, who: Caller = Who) -> HTMLResponse:
        return await by_dimension(request, "owners", who)

    @router.get("/rules", response_class=HTMLResponse)
    async def rules(request: Request, who: Caller = Who) -> HTMLResponse:
        return await by_dimension(request, "rules", who)

    @router.get("/tasks", response_class=HTMLResponse)
    async def tasks(request: Request, who: Caller = Who) -> HTMLResponse:
        """Open and overdue tasks by owner and team, and the open ones, the oldest first
        (``?owner=`` or ``?team=`` for one of them)."""
        lang = language(request)
        t = TEXT[lang]
        since, until = window(request)
        owner = request.query_params.get("owner") or None
        team = request.query_params.get("team") or None
        summary = await reporting.task_summary(since, until, owner, team, who.scope)
        owners = who.scope.values("owner")
        listed = (
            await people.tasks.open(owner=owner, team=team, limit=TASKS_SHOWN, owners=owners)
            if people is not None
            else []
        )

        def load_table(first: str, found: Sequence[Any]) -> dict[str, Any]:
            head = [first, t["open"], t["overdue"], t["oldest"]]
            rows = [[x.value or "—", x.open, x.overdue, when(x.oldest_created_at)] for x in found]
            return _table(head, rows)

        head = [t[k] for k in ("task", "about", "owner", "team", "priority", "created", "due")]
        rows = [
            [
                x.task_id,
                x.about,
                x.owner or "",
                x.team or "",
                x.priority or "",
                when(x.created_at),
                f"{when(x.due_at)}{' ⚠' if x.overdue else ''}",
                x.level or "",
            ]
            for x in listed
        ]
        median = summary.median_hours_to_complete
        cards = [
            (t["open_now"], f"{summary.open:,}"),
            (t["overdue_now"], f"{summary.open_overdue:,}"),
            (t["tasks_created"], f"{summary.created:,}"),
            (t["tasks_completed"], f"{summary.completed:,}"),
            (t["median_hours_to_complete"], _figure(median, "median_hours_to_complete")),
        ]
        return render(
            tasks_page,
            lang,
            "tasks",
            who,
            since=f"{since:%Y-%m-%d}",
            until=f"{until:%Y-%m-%d}",
            cards=cards,
            by_owner=load_table(t["owner"], summary.by_owner),
            by_team=load_table(t["team"], summary.by_team),
            listed=_table([*head, t["level"]], rows),
        )

    @router.get("/journeys", response_class=HTMLResponse)
    async def journeys(request: Request, who: Caller = Who) -> HTMLResponse:
        """Each journey's runs in the window and now, and its steps as a funnel (the first
        :data:`JOURNEYS_SHOWN`; ``?journey=`` for one of them)."""
        lang = language(request)
        since, until = window(request)
        who.require_everything("journeys")
        figures = reporting.journeys
        found = await figures.summaries(since, until) if figures is not None else []
        asked = request.query_params.get("journey") or None
        details = []
        for j in [j for j in found if asked in (None, j.journey)][:JOURNEYS_SHOWN]:
            detail = await figures.detail(j.journey, since, until) if figures else None
            details += [detail] if detail is not None else []
        return render(
            journeys_page,
            lang,
            "journeys",
            who,
            since=f"{since:%Y-%m-%d}",
            until=f"{until:%Y-%m-%d}",
            **journey_views.page(TEXT[lang], found, details),
        )

    @router.get("/at-risk", response_class=HTMLResponse)
    async def at_risk(request: Request, who: Caller = Who) -> HTMLResponse:
        lang = language(request)
        t = TEXT[lang]
        found = {s: d for s, d in (await attribution.at_risk()).items() if who.scope.sees(s)}
        riskiest = sorted(found.items(), key=lambda kv: kv[1].get("risk", ""), reverse=True)
        customers = _table(
            [t["customer"], t["owner"], t["risk"]],
            [
                [s.removeprefix("customer:"), d.get("owner", ""), d.get("risk", "")]
                for s, d in riskiest
            ],
        )
        return render(at_risk_page, lang, "at-risk", who, customers=customers)

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
    if key.endswith(("_rate", "_conversion", "_coverage", "_compliance")):
        return f"{value * 100:.1f}%"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.1f}"


def _shares(t: Mapping[str, str], first: str, rows: Sequence[Any]) -> dict[str, Any]:
    """A table of compliance rows: each value's subjects, those in cadence, and the share."""
    head = [first, t["subjects"], t["in_cadence"], t["share"]]
    cells = [[r.value or "—", r.subjects, r.in_cadence, _figure(r.rate, "_rate")] for r in rows]
    return _table(head, cells)


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
