"""The dashboard pages (services/analytics/dashboard.py and its templates) over a fake aggregates
store: every page in both languages, its figures, tables, chart and links, and the escaping of
every value that comes from data."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any, cast

import httpx
import jinja2
import pytest
from fastapi import FastAPI

from services.analytics.aggregates import Aggregates, Attribution
from services.analytics.dashboard import ENVIRONMENT, dashboard_router
from services.analytics.funnels import JourneyFigures
from services.analytics.labels import TEXT
from services.analytics.report import People, Reporting
from tests.unit.analytics.callers import as_admin
from tests.unit.analytics.journey_builders import World, entered, onboarding, records, step
from tests.unit.analytics.people_fakes import FakeTasks, people
from tests.unit.analytics.test_people import ev
from tests.unit.analytics.test_people_api import world

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=1>'
QUOTE = "O'Brien & <Co>"
WINDOW = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-03T00:00:00Z"}
PAGES = ("/", "/channels", "/owners", "/rules", "/tasks", "/journeys", "/at-risk")


def row(
    day: int, counters: dict[str, int], dim: str = "all", value: str = "*", month: int = 11
) -> dict[str, Any]:
    return {
        "start": datetime(2026, month, day, tzinfo=UTC),
        "dim": dim,
        "value": value,
        "counters": counters,
    }


DAYS = [
    row(
        1,
        {
            "orders": 1200,
            "renewals.due": 6,
            "renewals.renewed": 4,
            "renewals.reminded": 3,
            "renewals.converted": 2,
            "actions": 12,
            "deliveries.sent": 10,
            "deliveries.failed": 1,
            "touches.automated": 9,
            "touches.manual": 1,
            "touches.email": 7,
        },
    ),
    row(2, {"orders": 3, "renewals.due": 4, "renewals.renewed": 3, "deliveries.sent": 8}),
]
WEEKS = [row(2, {"channel_orders": 6, "orders": 45, "channels.flagged": 1})]
MONTHS = [row(1, {"touches.email": 12, "touches.chat": 4})]


class FakeAggregates:
    """Stands in for :class:`Aggregates`: answers a query with the rows given for its
    granularity and dimension (none otherwise)."""

    timezone = "UTC"

    def __init__(self, rows: Mapping[tuple[str, str], Sequence[dict[str, Any]]]) -> None:
        self.rows = rows

    async def series(
        self,
        granularity: str,
        dim: str,
        since: datetime,
        until: datetime,
        value: str | None = None,
        values: Any = None,
    ) -> list[dict[str, Any]]:
        return list(self.rows.get((granularity, dim), []))


class FakeAttribution(Attribution):
    def __init__(self, at_risk: dict[str, dict[str, str]]) -> None:
        self.found = at_risk

    async def get(self, subjects: Any) -> dict[str, dict[str, str]]:
        return {}

    async def update(self, changes: Any) -> None:
        return None

    async def at_risk(self) -> dict[str, dict[str, str]]:
        return self.found

    async def unowned(self) -> dict[str, int]:
        return {"customer": 3, "channel": 1}

    async def owned(self, kind: str, owners: Any) -> set[str]:
        return set()


FULL = {
    ("day", "all"): DAYS,
    ("day", "channel"): [
        row(1, {"channel_orders": 6, "orders": 1}, "channel", "CH-1"),
        row(1, {"channels.flagged": 1}, "channel", SCRIPT),
    ],
    ("day", "owner"): [
        row(1, {"actions": 3, "deliveries.sent": 2}, "owner", "S-0"),
        row(2, {"actions": 1}, "owner", "S-0"),
        row(1, {"renewals.due": 1}, "owner", IMG),
    ],
    ("day", "rule"): [row(1, {"actions": 20}, "rule", "renewal"), row(1, {}, "rule", QUOTE)],
    ("week", "all"): WEEKS,
    ("week", "channel"): [
        row(2, {"channel_orders": 6, "orders": 45}, "channel", "CH-1"),
        row(2, {"orders": 45, "channels.flagged": 1}, "channel", "CH-2"),
        row(2, {"orders": 2}, "channel", SCRIPT),
    ],
    ("month", "all"): MONTHS,
}
AT_RISK = {
    "customer:C-1": {"owner": "S-0", "risk": "high"},
    "customer:C-2": {"owner": IMG, "risk": "medium"},
    f"customer:{SCRIPT}": {"owner": QUOTE, "risk": IMG},
}


@asynccontextmanager
async def dashboard(
    rows: Mapping[tuple[str, str], Sequence[dict[str, Any]]] = FULL,
    at_risk: dict[str, dict[str, str]] | None = None,
    currency: str = "EUR",
    found: People | None = None,
    journeys: JourneyFigures | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    attribution = FakeAttribution(AT_RISK if at_risk is None else at_risk)
    reporting = Reporting(
        cast(Aggregates, FakeAggregates(rows)),
        {"email": 6.0, "chat": 4.0},
        40.0,
        currency,
        found,
        journeys,
    )
    app = FastAPI()
    app.include_router(
        dashboard_router(
            reporting,
            attribution,
            as_admin,
            clock=lambda: datetime(2026, 11, 2, 12, tzinfo=UTC),
        )
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://analytics") as http:
        yield http


class Parsed(HTMLParser):
    """The elements of a page (tag and attributes) and its text, entities decoded."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.texts: list[str] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.texts.append(data)


async def get(http: httpx.AsyncClient, path: str, **params: str) -> str:
    """The page at ``path`` over :data:`WINDOW`, without the line breaks between tags (the
    templates' layout, not the page's content)."""
    answer = await http.get(path, params={**WINDOW, **params})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    return re.sub(r">\s*\n\s*<", "><", answer.text)


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize(("lang", "html_lang"), [("en", "en"), ("zh", "zh-CN")])
async def test_every_page_has_the_chrome_in_its_language(
    path: str, lang: str, html_lang: str
) -> None:
    async with dashboard() as http:
        page = await get(http, path, lang=lang)
    t = TEXT[lang]
    assert page.startswith(f'<!doctype html><html lang="{html_lang}"><head>')
    assert f"<title>{t['title']}</title>" in page
    assert f"<strong>{t['title']}</strong>" in page
    assert "<script" not in page  # no scripts at all: data escaped, nothing to download
    links = [a for tag, a in Parsed(page).tags if tag == "a"]
    assert [a["href"] for a in links] == [
        f"/?lang={lang}",
        f"/channels?lang={lang}",
        f"/owners?lang={lang}",
        f"/rules?lang={lang}",
        f"/tasks?lang={lang}",
        f"/journeys?lang={lang}",
        f"/at-risk?lang={lang}",
        f"/costs?lang={lang}",
        f"/reports?lang={lang}",
        "?lang=zh" if lang == "en" else "?lang=en",
    ]
    current = "/" if path == "/" else path
    assert [a["href"] for a in links if a.get("class") == "on"] == [f"{current}?lang={lang}"]
    switch = "中文" if lang == "en" else "English"
    assert f'<a href="{links[-1]["href"]}">{switch}</a><span class="who">' in page
    assert f"{t['signed_in_as']} test-admin</span></header>" in page  # a key: no sign-out form
    pages = ("overview", "channels", "owners", "rules", "tasks", "journeys", "at-risk")
    names = [t[k] for k in pages]
    assert all(f">{name}</a>" in page for name in names)


async def test_the_language_comes_from_the_browser_when_not_asked() -> None:
    async with dashboard() as http:
        zh = (await http.get("/", headers={"accept-language": "zh-CN,zh;q=0.9"})).text
        en = (await http.get("/", headers={"accept-language": "fr-FR"})).text
        asked = (await http.get("/?lang=en", headers={"accept-language": "zh-CN"})).text
    assert '<html lang="zh-CN">' in zh
    assert "续约率" in zh
    assert '<html lang="en">' in en
    assert '<html lang="en">' in asked


async def test_the_overview_shows_the_report_the_chart_and_the_savings() -> None:
    async with dashboard() as http:
        page = await get(http, "/")
        zh = await get(http, "/", lang="zh")
    assert '<h2>2026-11-01 &ndash; 2026-11-03</h2><div class="cards">' in page
    assert '<div class="card">Renewal rate<b>70.0%</b></div>' in page  # 7 of 10
    assert '<div class="card">Reminder → renewal<b>66.7%</b></div>' in page
    assert '<div class="card">Churn recoveries<b>0</b></div>' in page
    assert '<div class="card">Delivery success<b>94.7%</b></div>' in page  # 18 of 19
    assert '<div class="card">Hours saved<b>0.7</b></div>' in page  # 7 e-mails x 6 min
    assert '<div class="card">Money saved<b>28.0</b></div>' in page
    assert "<h2>Daily activity</h2><svg" in page
    assert '<svg role="img" viewBox="0 0 900 260" width="100%">' in page
    assert '<rect x="0.0" y="0.0" width="43.2" height="220.0" fill="#2680c2">' in page
    assert "<title>Actions: 12</title>" in page
    assert "<title>Sent: 8</title>" in page
    assert '<text x="0.0" y="236" font-size="11">11-01</text>' in page
    assert '<tspan fill="#e12d39">■ Failed  </tspan>' in page
    assert "<tr><th></th><th>Orders</th><th>New customers</th>" in page
    assert "<tr><td></td><td>1,203</td><td>0</td><td>10</td><td>7</td>" in page
    assert "<h2>Manual work saved, by month</h2>" in page
    assert "<tr><th>Month</th><th>Hours saved</th><th>Money saved (EUR)</th></tr>" in page
    assert "<tr><td>2026-11</td><td>1.47</td><td>58.67</td></tr>" in page
    assert '<div class="card">续约率<b>70.0%</b></div>' in zh
    assert "<tr><th>月份</th><th>节省工时</th><th>节省成本 (EUR)</th></tr>" in zh


async def test_the_dimension_pages_total_each_value() -> None:
    async with dashboard() as http:
        owners = await get(http, "/owners")
        rules = await get(http, "/rules", lang="zh")
    assert "<h2>Owners · 2026-11-01 &ndash; 2026-11-03</h2>" in owners
    assert "<tr><th>Name</th><th>Actions</th><th>Sent</th><th>Renewals due</th>" in owners
    assert (
        "<tr><td>S-0</td><td>4</td><td>2</td><td>0</td><td>0</td><td>0</td><td>0</td><td>0</td></tr>"
        in owners
    )
    assert "<h2>规则 · 2026-11-01 &ndash; 2026-11-03</h2>" in rules
    assert "<tr><td>renewal</td><td>20</td><td>0</td><td>0</td><td>0</td></tr>" in rules
    assert "Channel health" not in owners


async def test_the_channels_page_shows_the_health_week_by_week() -> None:
    async with dashboard() as http:
        page = await get(http, "/channels")
        zh = await get(http, "/channels", lang="zh")
    assert "<tr><td>CH-1</td><td>6</td><td>0</td><td>1</td><td>0</td></tr>" in page
    assert "<h2>Channel health, week by week</h2><svg" in page
    assert "<p>Orders per week; ⚠ the channel was flagged that week.</p>" in page
    assert "<tr><th>Name</th><th>11-02</th></tr>" in page
    assert "<td>CH-1</td><td>51</td>" in page  # 6 + 45
    assert "<td>CH-2</td><td>45 ⚠</td>" in page
    assert "<h2>渠道健康度（按周）</h2>" in zh
    assert "<td>CH-2</td><td>45 ⚠</td>" in zh


async def test_the_customers_at_risk_come_riskiest_first() -> None:
    async with dashboard(at_risk={k: AT_RISK[k] for k in ("customer:C-1", "customer:C-2")}) as h:
        page = await get(h, "/at-risk")
        zh = await get(h, "/at-risk", lang="zh")
    assert "<h2>At risk</h2>" in page
    assert "<tr><th>Customer</th><th>Owner</th><th>Risk</th></tr>" in page
    assert page.index("<td>C-2</td>") < page.index("<td>C-1</td>")  # "medium" > "high"
    assert "<tr><td>C-1</td><td>S-0</td><td>high</td></tr>" in page
    assert "<h2>流失风险</h2>" in zh
    assert "<tr><th>客户</th><th>负责人</th><th>风险</th></tr>" in zh


@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_empty_data_says_so_on_every_page(lang: str) -> None:
    none = f"<p>{TEXT[lang]['none']}</p>"
    async with dashboard(rows={}, at_risk={}) as http:
        overview = await get(http, "/", lang=lang)
        channels = await get(http, "/channels", lang=lang)
        owners = await get(http, "/owners", lang=lang)
        at_risk = await get(http, "/at-risk", lang=lang)
        tasks = await get(http, "/tasks", lang=lang)
        journeys = await get(http, "/journeys", lang=lang)
    assert overview.count(none) == 2  # no chart, no months; the counters table is all zeros
    assert "<svg" not in overview
    assert channels.count(none) == 3  # no channels, no chart, no weeks
    assert owners.count(none) == 1
    assert at_risk.count(none) == 1
    assert "<table>" not in at_risk
    assert tasks.count(none) == 3  # no owners, no teams, no tasks
    assert journeys.count(none) == 1  # no journeys
    assert "<svg" not in journeys


async def test_a_bad_window_falls_back_to_the_last_31_days() -> None:
    async with dashboard() as http:
        page = (await http.get("/", params={"from": "yesterday", "to": "soon"})).text
    assert "<h2>2026-10-03 &ndash; 2026-11-03</h2>" in page  # the clock's day + 1, 31 days back


@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_values_from_data_are_escaped_on_every_page(lang: str) -> None:
    async with dashboard(currency=SCRIPT) as http:
        pages = {path: await get(http, path, lang=lang) for path in PAGES}
    for path, page in pages.items():
        assert SCRIPT not in page, path
        assert "<img" not in page, path
        assert "<Co>" not in page, path
        parsed = Parsed(page)
        assert not [tag for tag, _ in parsed.tags if tag in ("script", "img")], path
        handlers = [(tag, a) for tag, attrs in parsed.tags for a in attrs if a.startswith("on")]
        assert handlers == [], path
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    # a channel's name, in the channel table and in the health grid
    assert f"<td>{escaped}</td><td>0</td><td>1</td>" in pages["/channels"]
    assert f"<td>{escaped}</td><td>2</td>" in pages["/channels"]
    # an owner's name, as text: the quote cannot end an attribute
    assert "<td>&#34;&gt;&lt;img src=x onerror=1&gt;</td>" in pages["/owners"]
    assert "<td>O&#39;Brien &amp; &lt;Co&gt;</td>" in pages["/rules"]
    # the currency (settings) in a table header
    assert f"({escaped})</th>" in pages["/"]
    # a customer id, its owner and its risk label
    at_risk = pages["/at-risk"]
    assert f"<tr><td>{escaped}</td><td>O&#39;Brien &amp; &lt;Co&gt;</td>" in at_risk
    assert "<td>&#34;&gt;&lt;img src=x onerror=1&gt;</td></tr>" in at_risk
    texts = Parsed(at_risk).texts
    assert SCRIPT in texts  # the browser shows the value as it is, as text
    assert IMG in texts
    assert QUOTE in texts


def test_the_templates_escape_and_refuse_a_missing_value() -> None:
    assert ENVIRONMENT.autoescape is True
    assert sorted(ENVIRONMENT.list_templates()) == [
        "at_risk.html",
        "base.html",
        "channels.html",
        "costs.html",
        "dashboard.css",
        "dimension.html",
        "journeys.html",
        "macros.html",
        "overview.html",
        "reports.html",
        "signin.html",
        "tasks.html",
    ]
    with pytest.raises(jinja2.UndefinedError):  # the page without its table, nor the chrome's
        ENVIRONMENT.get_template("at_risk.html").render(t=TEXT["en"], lang="en")


async def test_the_tasks_page_shows_open_and_overdue_tasks_by_owner_and_team() -> None:
    async with dashboard(found=world()) as http:
        page = await get(http, "/tasks")
        zh = await get(http, "/tasks", lang="zh")
        one = await get(http, "/tasks", owner="S-2")
    assert "<h2>Tasks · 2026-11-01 &ndash; 2026-11-03</h2>" in page
    assert '<div class="card">Open tasks<b>2</b></div>' in page
    assert '<div class="card">Overdue now<b>1</b></div>' in page
    assert '<div class="card">Median hours to complete<b>4.0</b></div>' in page
    assert "<h2>Open tasks by owner, the oldest first</h2>" in page
    assert "<tr><th>Owner</th><th>Open</th><th>Overdue</th><th>Oldest since</th></tr>" in page
    assert "<tr><td>S-1</td><td>1</td><td>1</td><td>2026-11-02 09:15</td></tr>" in page
    assert page.index("<tr><td>south</td>") < page.index("<tr><td>north</td>")  # oldest first
    assert (
        "<tr><td>T-3</td><td>customer:C-1</td><td>S-1</td><td>south</td><td>normal</td>"
        "<td>2026-11-02 09:15</td><td>2026-11-04 09:15 ⚠</td><td></td></tr>"
    ) in page
    assert page.index("<td>T-3</td>") < page.index("<td>T-4</td>")
    assert "<td>T-1</td>" not in page  # done
    assert "<h2>任务 · 2026-11-01 &ndash; 2026-11-03</h2>" in zh
    assert "各负责人待办任务（最早优先）" in zh
    assert "<td>T-3</td>" not in one
    assert "<td>T-4</td>" in one


async def test_the_overview_shows_tasks_revisit_compliance_and_subjects_without_owner() -> None:
    async with dashboard(found=world()) as http:
        page = await get(http, "/")
        zh = await get(http, "/", lang="zh")
    assert "<h2>Tasks, revisits and owners</h2>" in page
    assert '<div class="card">Revisit compliance<b>66.7%</b></div>' in page
    assert '<div class="card">Customers without owner<b>2</b></div>' in page
    assert '<div class="card">Channels without manager<b>1</b></div>' in page
    assert '<div class="card">Median hours to complete<b>4.0</b></div>' in page
    assert "<h2>Revisit compliance by tier</h2>" in page
    assert "<tr><td>A</td><td>2</td><td>1</td><td>50.0%</td></tr>" in page
    assert "<tr><td>south</td><td>1</td><td>1</td><td>100.0%</td></tr>" in page
    assert '<div class="card">回访达标率<b>66.7%</b></div>' in zh
    assert "各团队回访达标率" in zh


async def test_a_task_from_data_is_escaped_on_the_tasks_page() -> None:
    tasks = FakeTasks()
    await tasks.apply([ev("created", datetime(2026, 11, 2, tzinfo=UTC), SCRIPT)])
    async with dashboard(found=people(tasks)) as http:
        page = await get(http, "/tasks")
    assert SCRIPT not in page
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in page


async def journeys_world() -> JourneyFigures:
    world = World()
    other = [
        entered("7", journey="win-back"),
        step("7", "offer", "send", "sent", None, journey="win-back"),
    ]
    await world.handle(records(onboarding()))
    await world.handle(records(other, partition=1))
    return world.figures


ALL_TIME = {"from": "2026-10-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}


async def test_the_journeys_page_lists_journeys_and_draws_each_funnel() -> None:
    async with dashboard(journeys=await journeys_world()) as http:
        page = await get(http, "/journeys", **ALL_TIME)
        zh = await get(http, "/journeys", lang="zh", **ALL_TIME)
        one = await get(http, "/journeys", journey="win-back", **ALL_TIME)
    assert "<h2>Journeys · 2026-10-01 &ndash; 2026-12-01</h2>" in page
    assert (
        "<tr><th>Journey</th><th>Entered</th><th>Converted</th><th>Exited</th><th>Completed</th>"
        "<th>In the journey now</th><th>Conversion</th></tr>"
    ) in page
    assert "<tr><td>onboarding</td><td>5</td><td>1</td><td>1</td><td>1</td><td>2</td>" in page
    assert "<td>20.0%</td></tr>" in page
    assert "<tr><td>win-back</td><td>1</td><td>0</td><td>0</td><td>0</td><td>0</td>" in page
    assert "<h2>Journey: onboarding</h2>" in page
    assert '<div class="card">Conversion<b>20.0%</b></div>' in page
    # the funnel: the entries, then each step in the order first seen, with who waits there
    assert page.count('<svg role="img"') == 2
    labels = re.findall(r'<text x="0" y="\d+" font-size="12">([^<]+)</text>', page)
    assert labels[:6] == ["Entered (start)", "welcome", "wait-3d", "check", "call", "bye"]
    assert "<title>Entered (start): 5</title>" in page
    assert "<title>welcome: 4</title>" in page
    assert "<title>Waiting now: 1</title>" in page
    assert '<tspan fill="#f0b429">■ Waiting now  </tspan>' in page
    assert (
        "<tr><td>welcome</td><td>send</td><td>4</td><td>4</td><td>0</td>"
        "<td>0</td><td>0</td><td>0</td><td>0</td><td>0</td></tr>"
    ) in page
    assert "<tr><td>(start)</td><td></td><td></td><td></td><td></td>" in page
    assert "<tr><td>check</td><td>branch</td><td>2</td><td>0</td><td>0</td><td>0</td>" in page
    assert "<tr><td>v2</td><td>1</td><td>0</td><td>1</td>" in page
    assert "<h2>旅程 · 2026-10-01 &ndash; 2026-12-01</h2>" in zh
    assert "<th>当前在途</th><th>转化率</th>" in zh
    assert "<tr><td>（起点）</td>" in zh
    assert "<td>check</td><td>分支</td>" in zh
    assert "<h2>Journey: onboarding</h2>" not in one
    assert "<h2>Journey: win-back</h2>" in one
    assert "<script" not in page


async def test_the_journeys_page_counts_the_window_and_shows_who_waits_now() -> None:
    async with dashboard(journeys=await journeys_world()) as http:
        later = await get(http, "/journeys", **{**ALL_TIME, "from": "2026-11-04T00:00:00Z"})
    # in the window: no entry, the waits that ended on the 5th; waiting: now, whatever window
    assert "<tr><td>onboarding</td><td>0</td><td>0</td><td>1</td><td>1</td><td>2</td>" in later
    assert "<td>—</td></tr>" in later  # no entry: no conversion rate
