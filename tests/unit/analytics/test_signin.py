"""Signing in to the analytics service (services/analytics/signin.py and sessions.py): API keys,
password sessions and their CSRF tokens, the login limit, a trusted proxy, the redirect of pages
to /signin, and the security headers — over a small app with one route of each kind."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any, Literal

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, StreamingResponse
from pydantic import SecretStr, ValidationError

from services.analytics.dashboard import ENVIRONMENT
from services.analytics.labels import TEXT
from services.analytics.sessions import Account, hash_command
from services.analytics.signin import Access, AccessSettings, Principal, install
from shared.apikeys import ANALYTICS_ADMIN, ANALYTICS_READ, RULES_READ, ApiKeySpec, digest

SECRET = "k" * 16 + "9f3b1c0e7a5d2468"  # 32 characters, not a placeholder
HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # cheap: tests only
PASSWORD = "correct horse battery staple"
USER = "wang.fang"
NOW = 1_800_000_000.0
FAILED = TEXT["en"]["signin_failed"]
KEYS = {"read": "upk_read", "admin": "upk_admin", "staff": "upk_staff", "rules": "upk_rules"}


def key_specs() -> list[ApiKeySpec]:
    return [
        ApiKeySpec(name="reporting", sha256=digest(KEYS["read"]), scopes=[ANALYTICS_READ]),
        ApiKeySpec(name="ops", sha256=digest(KEYS["admin"]), scopes=[ANALYTICS_ADMIN]),
        ApiKeySpec(
            name="s2-bot", sha256=digest(KEYS["staff"]), scopes=[ANALYTICS_READ], staff_id="S-2"
        ),
        ApiKeySpec(name="rules", sha256=digest(KEYS["rules"]), scopes=[RULES_READ]),
    ]


def account(username: str = USER, password: str = PASSWORD, **fields: Any) -> Account:
    values: dict[str, Any] = {"role": "owner", "staff_id": "S-1", **fields}
    return Account(username=username, password_hash=HASHER.hash(password), **values)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class CountingHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verified += 1
        return super().verify(hash, password)


def settings(**overrides: Any) -> AccessSettings:
    values: dict[str, Any] = {
        "api_keys": key_specs(),
        "accounts": [account(), account("li.na", "another good password", role="admin")],
        "session_secret": SecretStr(SECRET),
        "login_attempts": 3,
        "login_window_s": 300,
        **overrides,
    }
    return AccessSettings(**values)


def app_for(access: Access) -> FastAPI:
    app = FastAPI()
    install(app, access)
    api, page = access.api_dependency(), access.page_dependency()

    @app.get("/api/me")
    async def me(who: Principal = api) -> dict[str, Any]:
        return asdict(who)

    @app.post("/api/do")
    async def do(request: Request, who: Principal = api) -> dict[str, Any]:
        return {"done_by": who.name, "body": (await request.body()).decode()}

    @app.get("/page", response_class=HTMLResponse)
    async def a_page(request: Request, who: Principal = page) -> HTMLResponse:
        return HTMLResponse(f"<p>{who.name}</p><i>{access.csrf_token(request)}</i>")

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse("upkeep_up 1\n")

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            yield b"one,"
            yield b"two"

        return StreamingResponse(parts(), media_type="text/plain")

    return app


class World:
    def __init__(self, **overrides: Any) -> None:
        self.clock = Clock()
        self.hasher = CountingHasher()
        self.access = Access(settings(**overrides), hasher=self.hasher, clock=self.clock)
        self.app = app_for(self.access)

    def client(self, address: str = "10.0.0.5", secure: bool = True) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(address, 123))
        base = "https://testserver" if secure else "http://testserver"
        return httpx.AsyncClient(transport=transport, base_url=base)


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
async def http(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with world.client() as client:
        yield client


async def sign_in(
    http: httpx.AsyncClient, username: str = USER, password: str = PASSWORD, next_: str = "/page"
) -> httpx.Response:
    form = await http.get("/signin", params={"next": next_})
    assert form.status_code == 200
    token = http.cookies.get("upkeep_csrf")
    assert token
    assert f'name="csrf_token" value="{token}"' in form.text
    data = {"username": username, "password": password, "csrf_token": token, "next": next_}
    return await http.post("/signin", data=data)


def session_token(page: httpx.Response) -> str:
    found = re.search(r"<i>([^<]+)</i>", page.text)
    assert found
    assert found[1] != "None"
    return found[1]


# -- no credentials, API keys ------------------------------------------------------------------


async def test_without_credentials_the_api_says_401_and_a_page_sends_to_sign_in(
    http: httpx.AsyncClient,
) -> None:
    api = await http.get("/api/me")
    assert api.status_code == 401
    assert api.headers["www-authenticate"] == "Bearer"
    page = await http.get("/page", params={"lang": "zh", "x": "1"})
    assert page.status_code == 303
    assert page.headers["location"] == "/signin?next=/page%3Flang%3Dzh%26x%3D1"
    signin = await http.get(page.headers["location"])
    assert 'name="next" value="/page?lang=zh&amp;x=1"' in signin.text


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
async def test_a_key_with_an_analytics_scope_gets_in(http: httpx.AsyncClient, header: str) -> None:
    value = f"Bearer {KEYS['read']}" if header == "authorization" else KEYS["read"]
    answer = await http.get("/api/me", headers={header: value})
    assert answer.status_code == 200
    assert answer.json() == {
        "name": "reporting",
        "role": "admin",
        "staff_id": None,
        "via": "key",
        "can_admin": False,
    }


async def test_an_admin_key_may_administer_and_a_staff_key_is_that_manager(
    http: httpx.AsyncClient,
) -> None:
    admin = await http.get("/api/me", headers={"x-api-key": KEYS["admin"]})
    assert admin.json()["role"] == "admin"
    assert admin.json()["can_admin"] is True
    staff = await http.get("/page", headers={"authorization": f"bearer {KEYS['staff']}"})
    assert staff.status_code == 200
    assert "<p>s2-bot</p>" in staff.text
    me = await http.get("/api/me", headers={"x-api-key": KEYS["staff"]})
    assert me.json() | {"name": "-"} == {
        "name": "-",
        "role": "manager",
        "staff_id": "S-2",
        "via": "key",
        "can_admin": False,
    }


async def test_a_key_without_an_analytics_scope_is_forbidden(http: httpx.AsyncClient) -> None:
    assert (await http.get("/api/me", headers={"x-api-key": KEYS["rules"]})).status_code == 403
    assert (await http.get("/page", headers={"x-api-key": KEYS["rules"]})).status_code == 403


async def test_an_unknown_key_is_refused_even_beside_a_good_session(
    http: httpx.AsyncClient,
) -> None:
    assert (await sign_in(http)).status_code == 303
    assert (await http.get("/api/me")).status_code == 200
    unknown = await http.get("/api/me", headers={"authorization": "Bearer upk_nope"})
    assert unknown.status_code == 401
    page = await http.get("/page", headers={"x-api-key": "upk_nope"})
    assert page.status_code == 303


# -- signing in ----------------------------------------------------------------------------------


async def test_signing_in_sets_the_session_cookie_and_opens_the_pages(
    http: httpx.AsyncClient,
) -> None:
    answer = await sign_in(http)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/page"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if "upkeep_session=" in c)
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=lax", "path=/", "max-age=28800"} <= attributes
    page = await http.get("/page")
    assert page.status_code == 200
    assert f"<p>{USER}</p>" in page.text
    me = await http.get("/api/me")
    assert me.json() == {
        "name": USER,
        "role": "owner",
        "staff_id": "S-1",
        "via": "session",
        "can_admin": False,
    }


async def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(
    world: World, http: httpx.AsyncClient
) -> None:
    wrong = await sign_in(http, password="not it")
    before = world.hasher.verified
    unknown = await sign_in(http, username="nobody")
    assert world.hasher.verified == before + 1  # argon2 ran for the unknown name too
    for answer in (wrong, unknown):
        assert answer.status_code == 401
        assert FAILED in answer.text
        assert "upkeep_session" not in answer.headers.get("set-cookie", "")
    assert "nobody" in unknown.text  # the form keeps what was typed, escaped
    assert (await http.get("/api/me")).status_code == 401


async def test_the_form_is_in_chinese_when_asked(http: httpx.AsyncClient) -> None:
    form = await http.get("/signin", params={"lang": "zh"})
    assert '<html lang="zh-CN">' in form.text
    assert TEXT["zh"]["password"] in form.text
    assert '<link rel="stylesheet" href="/static/dashboard.css">' in form.text


async def test_failures_are_limited_per_username(world: World, http: httpx.AsyncClient) -> None:
    for _ in range(3):
        assert (await sign_in(http, password="guess")).status_code == 401
    verified = world.hasher.verified
    limited = await sign_in(http)  # the right password, too late
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 300
    assert TEXT["en"]["signin_limited"] in limited.text
    assert world.hasher.verified == verified  # not even checked
    async with world.client("10.0.0.99") as elsewhere:  # the name is limited from anywhere
        assert (await sign_in(elsewhere)).status_code == 429
    world.clock.now += 301  # the window slides past the failures
    assert (await sign_in(http)).status_code == 303


async def test_failures_are_limited_per_address(world: World) -> None:
    async with world.client("192.0.2.7") as sprayer, world.client("192.0.2.8") as other:
        for name in ("a", "b", "c"):
            assert (await sign_in(sprayer, username=name, password="guess")).status_code == 401
        assert (await sign_in(sprayer)).status_code == 429
        assert (await sign_in(other)).status_code == 303


async def test_a_success_forgets_the_usernames_failures(world: World) -> None:
    async def fail_twice(address: str) -> None:
        async with world.client(address) as client:
            for _ in range(2):
                assert (await sign_in(client, password="guess")).status_code == 401

    await fail_twice("192.0.2.1")
    async with world.client("192.0.2.2") as client:
        assert (await sign_in(client)).status_code == 303
    await fail_twice("192.0.2.3")
    async with world.client("192.0.2.4") as client:
        assert (await sign_in(client)).status_code == 303  # 2 failures since, not 4


async def test_the_sign_in_form_needs_its_double_submit_cookie(http: httpx.AsyncClient) -> None:
    data = {"username": USER, "password": PASSWORD, "csrf_token": "x" * 43}
    assert (await http.post("/signin", data=data)).status_code == 403  # no cookie
    await http.get("/signin")
    assert (await http.post("/signin", data=data)).status_code == 403  # another token
    del data["csrf_token"]
    assert (await http.post("/signin", data=data)).status_code == 403
    assert (await http.get("/api/me")).status_code == 401


async def test_a_form_over_8_kib_is_refused(http: httpx.AsyncClient) -> None:
    answer = await http.post("/signin", data={"username": USER, "password": "p" * 9000})
    assert answer.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(10):
            yield b"p" * 1024

    form = {"content-type": "application/x-www-form-urlencoded"}
    chunked = await http.post("/signin", content=chunks(), headers=form)
    assert chunked.status_code == 413


@pytest.mark.parametrize(
    "target",
    ["//evil.example", "https://evil.example/", "/\\evil.example", "evil", "/\tx", ""],
)
async def test_next_never_leaves_the_site(http: httpx.AsyncClient, target: str) -> None:
    form = await http.get("/signin", params={"next": target})
    assert 'name="next" value="/"' in form.text
    answer = await sign_in(http, next_=target)
    assert answer.headers["location"] == "/"


# -- the session ---------------------------------------------------------------------------------


async def test_a_tampered_cookie_is_no_session(http: httpx.AsyncClient) -> None:
    await sign_in(http)
    value = http.cookies["upkeep_session"]
    payload, _, signature = value.rpartition(".")
    forged = payload.replace(payload[2], "A" if payload[2] != "A" else "B", 1) + "." + signature
    for changed in (forged, value[:-2] + ("aa" if value[-2:] != "aa" else "bb"), "junk"):
        http.cookies.clear()
        http.cookies.set("upkeep_session", changed)
        assert (await http.get("/api/me")).status_code == 401
        assert (await http.get("/page")).status_code == 303


async def test_a_session_ends_after_session_minutes(world: World, http: httpx.AsyncClient) -> None:
    await sign_in(http)
    world.clock.now += 479 * 60
    assert (await http.get("/api/me")).status_code == 200
    world.clock.now += 2 * 60
    assert (await http.get("/api/me")).status_code == 401
    assert (await http.get("/page")).status_code == 303


async def test_a_new_password_or_a_removed_account_ends_the_sessions(world: World) -> None:
    async with world.client() as http:
        await sign_in(http)
        cookie = http.cookies["upkeep_session"]
    for accounts in ([account(password="a brand new password")], []):
        later = Access(settings(accounts=accounts), hasher=HASHER, clock=world.clock)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app_for(later)),
            base_url="https://testserver",
            cookies={"upkeep_session": cookie},
        ) as http:
            assert (await http.get("/api/me")).status_code == 401
    # a restart with the same configuration (secret and hashes): the session goes on
    same = Access(world.access.settings, hasher=HASHER, clock=world.clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app_for(same)),
        base_url="https://testserver",
        cookies={"upkeep_session": cookie},
    ) as http:
        assert (await http.get("/api/me")).status_code == 200


async def test_unsafe_methods_on_a_session_need_its_csrf_token(http: httpx.AsyncClient) -> None:
    await sign_in(http)
    token = session_token(await http.get("/page"))
    assert (await http.post("/api/do", json={"x": 1})).status_code == 403
    wrong = await http.post("/api/do", headers={"x-csrf-token": "w" * 43})
    assert wrong.status_code == 403
    with_header = await http.post("/api/do", headers={"x-csrf-token": token}, json={"x": 1})
    assert with_header.status_code == 200
    assert with_header.json() == {"done_by": USER, "body": '{"x":1}'}
    with_field = await http.post("/api/do", data={"csrf_token": token, "what": "it"})
    assert with_field.status_code == 200
    assert with_field.json()["body"] == f"csrf_token={token}&what=it"  # the route still reads it


async def test_a_key_needs_no_csrf_token(http: httpx.AsyncClient) -> None:
    answer = await http.post("/api/do", headers={"x-api-key": KEYS["read"]})
    assert answer.status_code == 200
    assert answer.json()["done_by"] == "reporting"


async def test_signing_out_needs_the_token_and_clears_the_cookie(http: httpx.AsyncClient) -> None:
    await sign_in(http)
    token = session_token(await http.get("/page"))
    assert (await http.post("/signout")).status_code == 403
    assert (await http.get("/api/me")).status_code == 200
    out = await http.post("/signout", data={"csrf_token": token})
    assert out.status_code == 303
    assert out.headers["location"] == "/signin"
    assert (await http.get("/api/me")).status_code == 401


def test_the_dashboard_header_shows_who_is_signed_in_and_a_sign_out_button() -> None:
    base = ENVIRONMENT.get_template("base.html")
    chrome = {
        "t": TEXT["en"],
        "lang": "en",
        "html_lang": "en",
        "current": "overview",
        "nav": [("overview", "/")],
        "switch": ("zh", "中文"),
    }
    who = Principal("O'Brien", "owner", "S-1", "session", can_admin=False)
    signed_in = base.render(**chrome, principal=who, csrf="tok")
    assert "Signed in as O&#39;Brien" in signed_in
    assert '<form class="signout" method="post" action="/signout">' in signed_in
    assert '<input type="hidden" name="csrf_token" value="tok">' in signed_in
    by_proxy = base.render(**chrome, principal=who, csrf=None)
    assert "O&#39;Brien" in by_proxy
    assert "/signout" not in by_proxy
    assert "/signout" not in base.render(**chrome)
    assert "<style" not in base.render(**chrome)


# -- the trusted proxy ---------------------------------------------------------------------------


PROXY = {"proxy_user_header": "X-Forwarded-User", "proxy_trusted_ips": ["10.0.0.0/24"]}


async def test_proxy_headers_count_only_from_a_trusted_peer() -> None:
    world = World(**PROXY)
    headers = {"x-forwarded-user": "S-7", "x-forwarded-groups": "upkeep-admins"}
    async with world.client("192.0.2.50") as outsider:
        assert (await outsider.get("/api/me", headers=headers)).status_code == 401
        assert (await outsider.get("/page", headers=headers)).status_code == 303
    async with world.client("10.0.0.5") as proxied:
        answer = await proxied.get("/api/me", headers=headers)
        assert answer.json() == {
            "name": "S-7",
            "role": "admin",
            "staff_id": "S-7",
            "via": "proxy",
            "can_admin": True,
        }
        # a key comes first
        keyed = await proxied.get("/api/me", headers={**headers, "x-api-key": KEYS["read"]})
        assert keyed.json()["via"] == "key"


@pytest.mark.parametrize(
    ("groups", "role"),
    [
        ("staff, upkeep-managers", "manager"),
        ("upkeep-managers,upkeep-admins", "admin"),
        ("sales", "owner"),
        ("", "owner"),
    ],
)
async def test_proxy_groups_give_the_role(groups: str, role: str) -> None:
    world = World(**PROXY)
    async with world.client("10.0.0.9") as proxied:
        headers = {"x-forwarded-user": "S-3", "x-forwarded-groups": groups}
        answer = await proxied.get("/api/me", headers=headers)
    assert answer.json()["role"] == role
    assert answer.json()["staff_id"] == "S-3"


async def test_the_proxy_is_off_by_default(http: httpx.AsyncClient) -> None:
    answer = await http.get("/api/me", headers={"x-forwarded-user": "S-7"})
    assert answer.status_code == 401


async def test_a_proxy_user_that_is_no_staff_id_is_nobody() -> None:
    world = World(**PROXY)
    async with world.client("10.0.0.5") as proxied:
        answer = await proxied.get("/api/me", headers={"x-forwarded-user": "two words"})
    assert answer.status_code == 401


# -- security headers ----------------------------------------------------------------------------


def assert_secured(answer: httpx.Response, hsts: bool = True) -> None:
    h = answer.headers
    assert h["content-security-policy"] == (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    assert h["x-content-type-options"] == "nosniff"
    assert h["x-frame-options"] == "DENY"
    assert h["referrer-policy"] == "no-referrer"
    assert h["cross-origin-opener-policy"] == "same-origin"
    assert h["permissions-policy"] == "camera=(), microphone=(), geolocation=()"
    assert ("strict-transport-security" in h) is hsts


async def test_every_response_carries_the_security_headers(http: httpx.AsyncClient) -> None:
    answers = [
        await http.get("/api/me", headers={"x-api-key": KEYS["read"]}),
        await http.get("/api/me"),
        await http.get("/nowhere"),
        await http.get("/page"),
        await http.get("/signin"),
        await http.get("/metrics"),
    ]
    assert [a.status_code for a in answers] == [200, 401, 404, 303, 200, 200]
    for answer in answers:
        assert_secured(answer)
        assert answer.headers["cache-control"] == "no-store"
    css = await http.get("/static/dashboard.css")
    assert_secured(css)
    assert css.headers["content-type"].startswith("text/css")
    assert css.headers["cache-control"] == "public, max-age=3600"
    assert ".scroll{overflow-x:auto}" in css.text
    stream = await http.get("/stream")
    assert stream.text == "one,two"
    assert_secured(stream)


async def test_only_the_api_docs_may_load_their_scripts_from_the_cdn(
    http: httpx.AsyncClient,
) -> None:
    docs = await http.get("/docs")
    assert docs.status_code == 200
    policy = docs.headers["content-security-policy"]
    assert "script-src 'unsafe-inline' https://cdn.jsdelivr.net" in policy
    assert "frame-ancestors 'none'" in policy
    page = await http.get("/signin")
    assert "script-src" not in page.headers["content-security-policy"]


async def test_no_hsts_nor_secure_cookies_over_plain_http() -> None:
    world = World(cookie_secure=False)
    async with world.client(secure=False) as http:
        answer = await sign_in(http)
        assert_secured(answer, hsts=False)
        assert "secure" not in answer.headers["set-cookie"].lower()
        assert (await http.get("/page")).status_code == 200


# -- settings, the hash command, logs ------------------------------------------------------------


@pytest.mark.parametrize(
    "secret", ["change-me", "changeme", "secret", "Change-Me-please", "s" * 31]
)
def test_a_placeholder_or_short_session_secret_is_refused(secret: str) -> None:
    with pytest.raises(ValidationError, match="SESSION_SECRET"):
        AccessSettings(session_secret=SecretStr(secret))


def test_without_a_secret_one_is_made_up_and_the_log_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="services.analytics.signin"):
        Access(AccessSettings(session_secret=None), hasher=HASHER)
    assert any("SESSION_SECRET" in r.getMessage() for r in caplog.records)


def test_accounts_need_an_argon2_hash_and_a_staff_id_unless_admin() -> None:
    with pytest.raises(ValidationError, match="argon2"):
        Account(username="x", password_hash="plain", role="admin")
    with pytest.raises(ValidationError, match="staff_id"):
        Account(username="x", password_hash=HASHER.hash("p"), role="owner")
    with pytest.raises(ValidationError, match="same username"):
        settings(accounts=[account("Ann"), account("ann")])
    with pytest.raises(ValidationError):
        settings(proxy_trusted_ips=["not-a-network"])
    assert Account(username="root", password_hash=HASHER.hash("p"), role="admin").staff_id is None


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = account().model_dump()
    monkeypatch.setenv("UPKEEP_ANALYTICS_ACCOUNTS", json.dumps([entry]))
    monkeypatch.setenv("UPKEEP_ANALYTICS_PROXY_TRUSTED_IPS", '["10.0.0.0/8", "::1"]')
    monkeypatch.setenv("UPKEEP_ANALYTICS_SESSION_MINUTES", "60")
    loaded = AccessSettings()
    assert loaded.accounts == [Account(**entry)]
    assert loaded.proxy_trusted_ips == ["10.0.0.0/8", "::1"]
    assert loaded.session_minutes == 60
    assert loaded.proxy_user_header is None
    assert entry["password_hash"] not in repr(loaded)


def test_the_hash_command_prints_an_account_entry(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert hash_command(["hash", USER, "--role", "manager", "--staff-id", "S-1"]) == 0
    entry = json.loads(capsys.readouterr().out)
    made = Account(**entry)
    assert (made.username, made.role, made.staff_id) == (USER, "manager", "S-1")
    assert PasswordHasher().verify(made.password_hash, PASSWORD)
    with pytest.raises(SystemExit):
        hash_command(["hash", USER, "--role", "owner"])  # no staff id


async def test_the_logs_name_no_user_nor_address(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        async with world.client("198.51.100.23") as http:
            await sign_in(http)
            for _ in range(4):
                await sign_in(http, password="guess")
    ours = [r for r in caplog.records if r.name == "services.analytics.signin"]
    assert [r.levelname for r in ours] == ["INFO", "INFO", "INFO", "INFO", "WARNING"]
    # keyed with the session secret: hashing the staff list does not tell who it was
    keyed = hmac.new(SECRET.encode(), USER.encode(), hashlib.sha256).hexdigest()[:12]
    assert {getattr(r, "user_ref", None) for r in ours} == {keyed}
    assert keyed != hashlib.sha256(USER.encode()).hexdigest()[:12]
    for record in caplog.records:
        text = record.getMessage() + " " + " ".join(map(str, vars(record).values()))
        assert USER not in text
        assert "198.51.100.23" not in text


# -- what review found ---------------------------------------------------------------------------


async def test_attempts_made_at_once_cannot_slip_past_the_limit(world: World) -> None:
    async with world.client("192.0.2.9") as http:
        form = await http.get("/signin")
        assert form.status_code == 200
        token = http.cookies.get("upkeep_csrf")
        data = {"username": USER, "password": "guess", "csrf_token": token, "next": "/page"}
        answers = await asyncio.gather(*(http.post("/signin", data=data) for _ in range(20)))
    codes = sorted(a.status_code for a in answers)
    assert codes.count(401) <= world.access.limiter.attempts
    assert codes.count(429) >= 20 - world.access.limiter.attempts


async def test_behind_the_proxy_each_forwarded_address_has_its_own_limit() -> None:
    world = World(**PROXY)
    limit = world.access.limiter.attempts
    async with world.client("10.0.0.7") as http:  # the proxy
        for n in range(limit + 1):
            http.headers["X-Forwarded-For"] = "198.51.100.1"
            answer = await sign_in(http, username=f"someone-{n}", password="guess")
        assert answer.status_code == 429  # the one address, under any name, is limited
        http.headers["X-Forwarded-For"] = "198.51.100.2"
        other = await sign_in(http, username="someone-else", password="guess")
    assert other.status_code == 401  # another address behind the same proxy is not


async def test_a_cross_site_post_by_a_proxy_signed_in_person_is_refused() -> None:
    world = World(**PROXY)
    async with world.client("10.0.0.7") as http:
        who = {"X-Forwarded-User": "S-1", "X-Forwarded-Groups": "upkeep-admins"}
        cross = await http.post("/api/do", headers={**who, "Origin": "https://evil.example"})
        none = await http.post("/api/do", headers=who)
        same = await http.post("/api/do", headers={**who, "Origin": "https://testserver"})
    assert (cross.status_code, none.status_code, same.status_code) == (403, 403, 200)
