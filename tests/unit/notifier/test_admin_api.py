"""The notifier's admin API is behind an API key with the notifier:admin scope: no key is 401,
a key without the scope is 403, the right key reaches every route (the routes themselves are
exercised against stores in tests/integration; the tasks routes in test_tasks_api.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.notifier.api import admin_router
from shared.apikeys import NOTIFIER_ADMIN, WRITE_EVENTS, ApiKeySpec, KeyRing, digest

ADMIN, WRITER = "upk_admin_key", "upk_writer_key"


class Empty:
    """Stands in for every store: each call answers nothing."""

    def __getattr__(self, name: str) -> Any:
        async def nothing(*_: Any, **__: Any) -> Any:
            if name == "preferences":
                return {}
            return [] if name.startswith(("list", "due")) else None

        return nothing


class NoTemplates:
    def names(self) -> list[str]:
        return ["birthday_greeting"]

    def locales(self, name: str) -> list[str]:
        return ["en", "zh-CN"]


def app() -> FastAPI:
    ring = KeyRing(
        [
            ApiKeySpec(name="ops", sha256=digest(ADMIN), scopes=[NOTIFIER_ADMIN]),
            ApiKeySpec(name="crm", sha256=digest(WRITER), scopes=[WRITE_EVENTS]),
        ]
    )
    api = FastAPI()
    api.include_router(admin_router(ring, Empty(), Empty(), NoTemplates()))  # type: ignore[arg-type]
    return api


ROUTES = [
    ("GET", "/v1/preferences/customer:C-1"),
    ("GET", "/v1/deliveries/followup:O-1"),
    ("GET", "/v1/templates"),
    ("DELETE", "/v1/suppressions/a@example.com"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_admin_route_needs_a_key_with_the_admin_scope(method: str, path: str) -> None:
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://notifier") as http:
        assert (await http.request(method, path)).status_code == 401
        wrong = await http.request(method, path, headers={"X-API-Key": WRITER})
        assert wrong.status_code == 403
        forged = await http.request(method, path, headers={"X-API-Key": "upk_guess"})
        assert forged.status_code == 401
        right = await http.request(method, path, headers={"Authorization": f"Bearer {ADMIN}"})
        assert right.status_code not in (401, 403, 422), right.text


async def test_the_templates_are_listed_with_the_admin_key() -> None:
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://notifier") as http:
        answer = await http.get("/v1/templates", headers={"X-API-Key": ADMIN})
    assert answer.status_code == 200
    assert answer.json() == {"birthday_greeting": ["en", "zh-CN"]}
