"""Signing in to the analytics dashboard, and what each person then sees, against a running
analytics process with the money scenario of tests/integration/test_analytics_money.py (CH-A
and CH-B belong to owner S-O1 "wang", CH-C to owner S-O2 "zhang", both under manager S-M
"li"), budgets of this month for CH-A and CH-C, and reports of S-M and S-O2 in the archive.

In headless Chromium (tests/e2e/browser.py), through the real form, cookies and redirects:

- a page opened without a session leads to the sign-in form, which refuses a wrong password
  or an unknown name with the same message;
- an owner sees their own channels, owner row and budget bar and nothing of the other owner;
  the admin pages are refused (403) and not linked; signing out ends the session;
- a manager sees both owners under them;
- every page says nothing on the console.

With plain HTTP, signed in as owner S-O1: every GET operation of the API (read from its
/openapi.json, so a new one is covered too), asked for S-O2's data every way its parameters
allow, answers 403, 404 or nothing of S-O2's; every POST operation needs the session's CSRF
token."""

from __future__ import annotations

import asyncio
import itertools
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import orjson
import pytest
from argon2 import PasswordHasher

from deploy.local.stack import DEV_API_KEY, LocalStack
from shared.events.envelope import CanonicalEvent
from shared.kafka.topics import ensure_topics
from shared.settings import KafkaSettings
from tests.conftest import unique_topics
from tests.e2e.browser import Browser
from tests.e2e.replicas import Replicas
from tests.integration.test_analytics_money import event, scenario
from tests.kafka_helpers import publish_events, wait_consumed, wait_for_topics
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

ADMIN_KEY = {"X-API-Key": DEV_API_KEY}  # analytics:read and analytics:admin (`make up`'s)
# who signs in: (role, staff id); UPKEEP_ANALYTICS_ACCOUNTS replaces `make up`'s accounts
PEOPLE = {
    "admin": ("admin", None),
    "wang": ("owner", "S-O1"),
    "zhang": ("owner", "S-O2"),
    "li": ("manager", "S-M"),
}
NOVEMBER = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}
SPAN = "from=2026-11-01T00:00:00Z&to=2026-12-31T00:00:00Z"
REVENUE = {("CH-A", "CNY"): "10500.00", ("CH-B", "CNY"): "2000.00", ("CH-C", "USD"): "1000.00"}
FAILED = "The username or password is not right."
BUDGET, THEIR_BUDGET = "CH-A this month", "CH-C this month"
# this month's budgets: channel, name, amount, the cost today, currency
BUDGETS_NOW = [
    ("CH-A", BUDGET, "1000.00", "300.00", "CNY"),
    ("CH-C", THEIR_BUDGET, "500.00", "50.00", "USD"),
]
CSRF_REFUSED = "missing or wrong CSRF token"
# what of S-O2's an answer to wang must not hold: ids, name, and the dollars only CH-C has
THEIRS = ("S-O2", "CH-C", "Zhang Min", "USD")
# the values each parameter is asked with to reach S-O2's data (in the window of the data)
REACHING: dict[str, list[Any]] = {
    "owner": ["S-O2"],
    "team": ["east"],  # everyone's: an owner reads no team's figures
    "manager_id": ["S-M", "S-O2"],
    "from": [NOVEMBER["from"]],
    "to": ["2026-12-31T00:00:00Z"],
}
DIM_VALUES = [None, "S-O2", "CH-C", "east"]  # each dimension with each of these as its value


@dataclass
class World:
    base: str
    passwords: dict[str, str]
    reports: list[str]  # archived reports' keys: S-M's and S-O2's
    log: Path


def accounts(passwords: dict[str, str]) -> str:
    hasher = PasswordHasher()
    entries = [
        {"username": name, "password_hash": hasher.hash(passwords[name]), "role": role}
        | ({"staff_id": staff} if staff else {})
        for name, (role, staff) in PEOPLE.items()
    ]
    return orjson.dumps(entries).decode()


def this_month(tag: str, now: datetime) -> list[CanonicalEvent]:
    """A budget of the current month for CH-A (wang's) and one for CH-C (zhang's), and a cost
    of each channel today against it."""
    events = []
    for channel, name, amount, cost, currency in BUDGETS_NOW:
        events += [
            event(
                f"b-now-{channel}",
                "budget.set",
                now,
                budget_id=f"B-NOW-{channel}",
                name=name,
                scope="channel",
                scope_id=channel,
                period="month",
                period_id=f"{now:%Y-%m}",
                amount=amount,
                currency=currency,
                set_at=now.isoformat(),
            ),
            event(
                f"k-now-{channel}",
                "cost.recorded",
                now,
                about=f"channel:{channel}",
                cost_id=f"K-NOW-{channel}-{tag}",
                category="gift",
                currency=currency,
                amount=cost,
                incurred_on=now.date().isoformat(),
                recorded_at=now.isoformat(),
            ),
        ]
    return events


async def revenue_by_channel(http: httpx.AsyncClient) -> dict[tuple[str, str], str]:
    answer = await http.get("/v1/costs", params={**NOVEMBER, "dim": "channel"})
    assert answer.status_code == 200, answer.text
    return {
        (row["value"], money["currency"]): money["revenue"]
        for row in answer.json()
        for money in row["money"]["by_currency"]
    }


@pytest.fixture(scope="module")
async def world(stack: LocalStack, kafka_settings: KafkaSettings) -> AsyncIterator[World]:
    topics = unique_topics()
    await ensure_topics(kafka_settings, topics)
    await wait_for_topics(kafka_settings, topics)
    passwords = {name: secrets.token_urlsafe(12) for name in PEOPLE}
    procs = Replicas(stack, "analytics", topics, {"UPKEEP_ANALYTICS_ACCOUNTS": accounts(passwords)})
    try:
        proc = await asyncio.to_thread(procs.start, "a")
        tag = uuid.uuid4().hex[:8]
        events = scenario(tag)
        profiles = [e for e in events if e.type.endswith(".upserted.v1")]
        rest = [e for e in events if not e.type.endswith(".upserted.v1")]
        # whom each channel and customer belongs to is known before their money arrives
        await publish_events(kafka_settings, topics.events, profiles)
        await wait_consumed(kafka_settings, procs.group, [topics.events], 120)
        await publish_events(
            kafka_settings, topics.events, rest + this_month(tag, datetime.now(UTC))
        )
        base = procs.urls["a"]
        async with httpx.AsyncClient(base_url=base, timeout=20, headers=ADMIN_KEY) as http:
            found: dict[tuple[str, str], str] = {}

            async def counted() -> bool:
                found.update(await revenue_by_channel(http))
                return all(found.get(k) == v for k, v in REVENUE.items())

            await eventually(counted, 120, interval=0.5, what=lambda: f"revenue so far: {found}")

            want = {(f"B-NOW-{channel}", cost) for channel, _, _, cost, _ in BUDGETS_NOW}

            async def budget_used() -> bool:
                answer = await http.get("/v1/budgets")
                return {(b["budget_id"], b["used"]) for b in answer.json()} == want

            await eventually(budget_used, 120, interval=0.5, what="this month's budget not used")
            reports = []
            for manager in ("S-M", "S-O2"):
                sent = await http.post(
                    "/v1/reports/monthly:send-now",
                    json={"manager_id": manager, "period": "2026-11"},
                )
                assert sent.status_code == 200, sent.text
                reports.append(sent.json()["key"])
                archived = await http.get(f"/v1/reports/archive/{quote(reports[-1], safe=':')}")
                assert archived.status_code == 200, archived.text
        yield World(base, passwords, reports, proc.log_file)
    finally:
        procs.stop_all()


# -- in the browser ---------------------------------------------------------------------------


def signin_next(url: str) -> str | None:
    """Where the sign-in page at ``url`` leads once signed in; None when ``url`` is not it."""
    parts = urlsplit(url)
    if parts.path != "/signin":
        return None
    return parse_qs(parts.query).get("next", [""])[0]


async def sign_in(browser: Browser, world: World, user: str, path: str) -> str:
    """Open ``path`` without a session, sign in as ``user`` on the form it leads to; the DOM of
    the page it then leads back to."""
    landed = await browser.goto(f"{world.base}{path}")
    assert signin_next(landed) == path, landed
    fields = {"username": user, "password": world.passwords[user]}
    assert await browser.submit_form("form.signin", fields) == f"{world.base}{path}"
    assert browser.last_status == 200
    dom = await browser.dom()
    assert f"Signed in as {user}" in dom
    return dom


async def page(browser: Browser, world: World, path: str, status: int = 200) -> str:
    """The DOM of ``path``, opened by the signed-in browser, which said nothing on its console."""
    browser.clear_console()
    assert await browser.goto(f"{world.base}{path}") == f"{world.base}{path}"
    assert browser.last_status == status, f"{path}: {browser.last_status}"
    dom = await browser.dom()
    if status == 200:
        assert browser.console == [], f"{path}: console says {browser.console}"
    else:  # only the failed load itself
        assert all(f"status of {status}" in line for line in browser.console), browser.console
    browser.clear_console()
    return dom


def missing(dom: str, *texts: str) -> list[str]:
    return [text for text in texts if text not in dom]


def present(dom: str, *texts: str) -> list[str]:
    return [text for text in texts if text in dom]


def budget_bar(dom: str) -> bool:
    return re.search(r'<table class="budgets">.*?<svg', dom, re.DOTALL) is not None


async def test_a_page_leads_to_sign_in_which_refuses_a_wrong_password(
    world: World, tmp_path: Path
) -> None:
    async with Browser.launch(tmp_path / "profile") as browser:
        landed = await browser.goto(f"{world.base}/costs")
        assert signin_next(landed) == "/costs", landed
        assert browser.statuses[f"{world.base}/costs"] == 303
        assert browser.console == [], browser.console
        for user, password in (("wang", world.passwords["zhang"]), ("nobody", "not-a-password")):
            url = await browser.submit_form("form.signin", {"username": user, "password": password})
            assert signin_next(url) is not None, url
            assert browser.last_status == 401
            dom = await browser.dom()
            assert FAILED in dom
            assert "Signed in as" not in dom
            assert "upkeep_session" not in {c["name"] for c in await browser.cookies()}
            # the same form again, still leading to /costs
            next_field = "document.querySelector('form.signin [name=next]').value"
            assert await browser.evaluate(next_field) == "/costs"
            assert all("status of 401" in line for line in browser.console), browser.console
            browser.clear_console()


async def test_an_owner_sees_only_their_own_then_signs_out(world: World, tmp_path: Path) -> None:
    async with Browser.launch(tmp_path / "profile") as browser:
        dom = await sign_in(browser, world, "wang", f"/costs?{SPAN}")
        assert browser.console == [], browser.console
        assert not missing(dom, "<td>CH-A</td>", "<td>CH-B</td>", "<td>S-O1</td>", BUDGET)
        assert not present(dom, *THEIRS)
        assert budget_bar(dom), "no budget bar"
        # the pages of figures not split by owner are not offered
        assert not present(dom, 'href="/rules', 'href="/journeys')
        assert not missing(dom, 'href="/costs', 'href="/owners', 'href="/channels')
        dom = await page(browser, world, f"/owners?{SPAN}")
        assert not missing(dom, "<td>S-O1</td>")
        assert not present(dom, *THEIRS)
        dom = await page(browser, world, f"/channels?{SPAN}")
        assert not missing(dom, "<td>CH-A</td>")
        assert not present(dom, *THEIRS)
        for path in ("/", "/tasks", "/at-risk", "/reports", "/costs?lang=zh"):
            dom = await page(browser, world, path)
            assert not present(dom, *THEIRS, "<td>S-M</td>"), path
        await page(browser, world, f"/rules?{SPAN}", status=403)
        await page(browser, world, "/journeys", status=403)

        await page(browser, world, "/")
        assert await browser.submit_form("form.signout", {}) == f"{world.base}/signin"
        assert "upkeep_session" not in {c["name"] for c in await browser.cookies()}
        assert browser.console == [], browser.console
        landed = await browser.goto(f"{world.base}/owners")
        assert signin_next(landed) == "/owners", landed  # the session is over

        dom = await sign_in(browser, world, "zhang", f"/costs?{SPAN}")
        assert browser.console == [], browser.console
        assert not missing(dom, "<td>CH-C</td>", "<td>S-O2</td>")
        assert not present(dom, "CH-A", "CH-B", "S-O1")
        assert budget_bar(dom), "no budget bar"
        assert not missing(dom, THEIR_BUDGET)


async def test_a_manager_sees_both_owners_under_them(world: World, tmp_path: Path) -> None:
    async with Browser.launch(tmp_path / "profile") as browser:
        dom = await sign_in(browser, world, "li", f"/costs?{SPAN}")
        assert browser.console == [], browser.console
        everyone = ("CH-A", "CH-B", "CH-C", "S-O1", "S-O2")
        assert not missing(dom, *(f"<td>{x}</td>" for x in everyone), BUDGET, THEIR_BUDGET)
        assert budget_bar(dom), "no budget bar"
        assert 'href="/rules' not in dom
        dom = await page(browser, world, f"/owners?{SPAN}")
        assert not missing(dom, "<td>S-O1</td>", "<td>S-O2</td>")
        dom = await page(browser, world, "/reports")
        assert not missing(dom, "<td>S-M</td>", "<td>S-O2</td>")
        await page(browser, world, f"/rules?{SPAN}", status=403)


# -- over plain HTTP --------------------------------------------------------------------------


@dataclass
class Signed:
    http: httpx.AsyncClient
    csrf: str  # the session's CSRF token, as the pages' forms carry it


@asynccontextmanager
async def signed_in(world: World, user: str) -> AsyncIterator[Signed]:
    """A client holding ``user``'s session, got through the sign-in form as a browser does."""
    async with httpx.AsyncClient(base_url=world.base, timeout=20) as http:
        form = await http.get("/signin")
        assert form.status_code == 200, form.text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None, form.text
        fields = {"csrf_token": token[1], "next": "/", "username": user}
        answer = await http.post("/signin", data=fields | {"password": world.passwords[user]})
        assert answer.status_code == 303, answer.text
        assert "upkeep_session" in http.cookies
        home = await http.get("/")
        assert home.status_code == 200, home.text
        csrf = re.search(r'class="signout".*?name="csrf_token" value="([^"]+)"', home.text)
        assert csrf is not None, home.text
        yield Signed(http, csrf[1])


@pytest.fixture
async def wang(world: World) -> AsyncIterator[Signed]:
    async with signed_in(world, "wang") as session:
        yield session


def operations(openapi: dict[str, Any], method: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (path, item[method])
        for path, item in openapi["paths"].items()
        if method in item and path.startswith("/v1/")
    ]


def schema_of(openapi: dict[str, Any], parameter: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema, ``anyOf: [X, null]`` and ``$ref`` resolved."""
    schema: dict[str, Any] = parameter.get("schema", {})
    for option in schema.get("anyOf", []):
        if option.get("type") != "null":
            schema = option
    ref = schema.get("$ref")
    if ref:
        schema = openapi["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return schema


def requests_reaching_theirs(
    openapi: dict[str, Any], path: str, operation: dict[str, Any], world: World
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every URL and query with which ``operation`` could give S-O2's data: each path parameter
    and each query parameter with every value that could reach it (dimensions with each value,
    every value of an enum); raises for a parameter it knows no value of."""
    paths = {"key": [quote(k, safe=":") for k in world.reports], "name": ["onboarding"]}
    choices: dict[str, list[Any]] = {}
    for parameter in operation.get("parameters", []):
        name, schema = parameter["name"], schema_of(openapi, parameter)
        values = REACHING.get(name) or paths.get(name) or schema.get("enum")
        if name == "value":
            continue  # with each dimension, below
        if values is None and schema.get("type") == "boolean":
            values = [True, False]
        if values is None and not parameter.get("required"):
            values = [None]  # the default: an optional count or period, say
        assert values, f"{path}: no value to try for the {parameter['in']} parameter {name}"
        choices[name] = values
    has_value = any(p["name"] == "value" for p in operation.get("parameters", []))
    if has_value:
        choices["value"] = DIM_VALUES
    names = list(choices)
    for combination in itertools.product(*(choices[n] for n in names)):
        chosen = dict(zip(names, combination, strict=True))
        url = path
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path":
                url = url.replace("{" + parameter["name"] + "}", str(chosen.pop(parameter["name"])))
        yield url, {k: v for k, v in chosen.items() if v is not None}


async def test_an_owners_session_reaches_no_other_owners_data_through_any_api_route(
    world: World, wang: Signed
) -> None:
    http = wang.http
    # the session works for the API: wang's own figures, and only those
    own = await revenue_by_channel(http)
    assert own == {k: v for k, v in REVENUE.items() if k[0] in ("CH-A", "CH-B")}, own
    openapi = (await http.get("/openapi.json")).json()
    gets = operations(openapi, "get")
    assert {"/v1/costs", "/v1/series.csv", "/v1/reports/{kind}/preview"} <= {p for p, _ in gets}
    exercised, answers = 0, {200: 0, 403: 0, 404: 0}
    for path, operation in gets:
        tried = 0
        for url, params in requests_reaching_theirs(openapi, path, operation, world):
            answer = await http.get(url, params=params)
            what = f"GET {answer.request.url}: {answer.status_code} {answer.text[:300]}"
            what += f" (the log: {world.log})"
            assert answer.status_code in answers, what
            answers[answer.status_code] += 1
            if answer.status_code == 200:
                assert not [x for x in THEIRS if x in answer.text], what
            tried += 1
        assert tried, f"{path}: not asked at all"
        exercised += 1
    print(f"{exercised} GET operations of {len(gets)}, answers by status: {answers}")
    assert exercised >= len(gets)
    assert answers[403], answers
    assert answers[200], answers
    # and named outright: what a leak would most likely come through
    for url, params in [
        ("/v1/series.csv", {**NOVEMBER, "dim": "owner", "value": "S-O2"}),
        ("/v1/costs.csv", {**NOVEMBER, "dim": "channel", "value": "CH-C"}),
        ("/v1/costs", {**NOVEMBER, "dim": "owner", "value": "S-O2"}),
        ("/v1/tasks", {"owner": "S-O2"}),
        ("/v1/reports/weekly/preview", {"manager_id": "S-M"}),
        ("/v1/reports/monthly/preview", {"manager_id": "S-O2", "period": "2026-11"}),
    ]:
        answer = await http.get(url, params=params)
        assert answer.status_code == 403, f"{url} {params}: {answer.status_code} {answer.text}"
    for key in world.reports:
        answer = await http.get(f"/v1/reports/archive/{quote(key, safe=':')}")
        assert answer.status_code == 404, f"{key}: {answer.status_code} {answer.text}"
    listed = await http.get("/v1/reports")
    assert listed.status_code == 200, listed.text
    assert listed.json() == [], listed.text  # S-M's and S-O2's reports are not wang's


async def test_a_post_with_the_session_needs_its_csrf_token(world: World, wang: Signed) -> None:
    http = wang.http
    openapi = (await http.get("/openapi.json")).json()
    posts = operations(openapi, "post")
    assert posts, "no POST operation in the API"
    kinds = {"kind": "monthly"}
    for path, _ in posts:
        url = re.sub(r"\{(\w+)\}", lambda m: kinds[m[1]], path)
        body = {"manager_id": "S-O1", "period": "2026-11"}
        refused = await http.post(url, json=body)
        assert refused.status_code == 403, f"{url}: {refused.status_code} {refused.text}"
        assert refused.json()["detail"] == CSRF_REFUSED, refused.text
        other = {"X-CSRF-Token": secrets.token_urlsafe(32)}
        wrong = await http.post(url, json=body, headers=other)
        assert wrong.status_code == 403, wrong.text
        assert wrong.json()["detail"] == CSRF_REFUSED, wrong.text
        # with the token the route itself answers: an owner may not send reports
        answer = await http.post(url, json=body, headers={"X-CSRF-Token": wang.csrf})
        assert answer.status_code == 403, f"{url}: {answer.status_code} {answer.text}"
        assert answer.json()["detail"] != CSRF_REFUSED, answer.text
    # signing out is a POST too
    refused = await http.post("/signout")
    assert refused.status_code == 403, refused.text
    assert (await http.get("/v1/budgets")).status_code == 200  # still signed in
    out = await http.post("/signout", data={"csrf_token": wang.csrf})
    assert out.status_code == 303, out.text
    assert out.headers["location"] == "/signin"
    assert (await http.get("/v1/budgets")).status_code == 401
