"""The journeys API (keys of scope rules:read and rules:admin, an in-memory store, a stand-in
dry run) and journey files applied from a directory."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI

from services.rules.journeys.api import journeys_router
from services.rules.journeys.catalog import Catalog
from services.rules.journeys.definition import Journey
from services.rules.journeys.files import apply_directory
from services.rules.journeys.store import InMemoryJourneyStore
from shared.apikeys import RULES_ADMIN, RULES_READ, WRITE_EVENTS, ApiKeySpec, KeyRing, digest
from shared.templates import TEMPLATE_ROOT
from tests.unit.rules.journeys.builders import document, send

ADMIN, READER, WRITER = "upk_admin", "upk_reader", "upk_writer"
AS_ADMIN = {"X-API-Key": ADMIN}
AS_READER = {"Authorization": f"Bearer {READER}"}
NAME = "test-journey"
PATH = f"/v1/journeys/{NAME}"
DOC = document({"id": "hello", **send()})
BAD = document(
    {"id": "a", "wait": {"for": "7 days"}},
    {"id": "a", "branch": {"when": "subject.tier ==", "then": "a"}},
    trigger={"event": "customer.ordered"},
)
BAD_PATHS = {
    "trigger.event",
    "steps.0.wait.for",
    "steps.1.branch.when",
    "steps.1.branch.then",
    "steps.1.id",
}


@dataclass
class FakeDryRun:
    calls: list[tuple[Journey, int, datetime | None, datetime]] = field(default_factory=list)

    async def __call__(
        self, journey: Journey, version: int, since: datetime | None, until: datetime
    ) -> dict[str, Any]:
        self.calls.append((journey, version, since, until))
        return {"journey": journey.name, "version": version, "published": False}


@dataclass
class Api:
    http: httpx.AsyncClient
    store: InMemoryJourneyStore
    catalog: Catalog
    dry_run: FakeDryRun


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    store, catalog, dry = InMemoryJourneyStore(), Catalog(), FakeDryRun()
    ring = KeyRing(
        [
            ApiKeySpec(name="ops", sha256=digest(ADMIN), scopes=[RULES_ADMIN]),
            ApiKeySpec(name="viewer", sha256=digest(READER), scopes=[RULES_READ]),
            ApiKeySpec(name="crm", sha256=digest(WRITER), scopes=[WRITE_EVENTS]),
        ]
    )
    app = FastAPI()
    app.include_router(journeys_router(store, catalog, ring, TEMPLATE_ROOT, dry))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://rules") as http:
        yield Api(http, store, catalog, dry)


async def put(api: Api, doc: dict[str, Any] = DOC, **kw: Any) -> httpx.Response:
    return await api.http.put(PATH, json=doc, headers=AS_ADMIN, **kw)


ROUTES = [
    ("GET", "/v1/journeys", "read"),
    ("GET", PATH, "read"),
    ("GET", f"{PATH}/versions", "read"),
    ("GET", f"{PATH}/versions/1", "read"),
    ("POST", f"{PATH}:validate", "read"),
    ("PUT", PATH, "admin"),
    ("DELETE", PATH, "admin"),
    ("POST", f"{PATH}:enable", "admin"),
    ("POST", f"{PATH}:disable", "admin"),
    ("POST", f"{PATH}:dry-run", "admin"),
]


@pytest.mark.parametrize(("method", "path", "needs"), ROUTES)
async def test_every_route_needs_a_key_and_changes_need_the_admin_scope(
    api: Api, method: str, path: str, needs: str
) -> None:
    await put(api)
    body: dict[str, Any] | None = DOC if method in ("PUT", "POST") and "able" not in path else None
    if path.endswith(":dry-run"):
        body = {}

    async def call(headers: dict[str, str]) -> httpx.Response:
        return await api.http.request(method, path, json=body, headers=headers)

    assert (await call({})).status_code == 401
    assert (await call({"X-API-Key": "upk_guess"})).status_code == 401
    assert (await call({"X-API-Key": WRITER})).status_code == 403
    reader = await call(AS_READER)
    assert reader.status_code == (403 if needs == "admin" else 200), reader.text
    admin = await call(AS_ADMIN)
    assert admin.status_code in (200, 204), admin.text
    assert len(api.dry_run.calls) == (1 if path.endswith(":dry-run") else 0)  # the admin's


async def test_put_creates_then_versions_then_changes_nothing(api: Api) -> None:
    created = await put(api)
    assert created.status_code == 201
    body = created.json()
    assert (body["name"], body["version"], body["enabled"], body["updated_by"]) == (
        NAME,
        1,
        False,
        "ops",
    )
    assert body["change"]["what"] == "created"
    assert body["definition"]["steps"][0]["id"] == "hello"
    assert api.catalog.current[NAME].version == 1  # this replica sees it at once
    again = await put(api)
    assert (again.status_code, again.json()["change"], again.json()["version"]) == (200, None, 1)
    newer = await put(api, document({"id": "hello", **send()}, {"id": "bye", **send("manager")}))
    assert newer.status_code == 200
    assert newer.json()["version"] == 2
    assert newer.json()["change"]["summary"] == ["step bye added"]
    assert api.catalog.current[NAME].version == 2


async def test_put_takes_yaml_as_well(api: Api) -> None:
    text = yaml.safe_dump(DOC, allow_unicode=True)
    answer = await api.http.put(
        PATH, content=text, headers={**AS_ADMIN, "Content-Type": "application/yaml"}
    )
    assert answer.status_code == 201, answer.text
    as_json = await put(api)
    assert (as_json.status_code, as_json.json()["change"]) == (200, None)  # the same journey


async def test_put_without_a_name_takes_the_paths(api: Api) -> None:
    unnamed = {k: v for k, v in DOC.items() if k != "name"}
    answer = await put(api, unnamed)
    assert (answer.status_code, answer.json()["name"]) == (201, NAME)


async def test_a_definition_that_does_not_validate_is_refused_with_every_error_and_path(
    api: Api,
) -> None:
    answer = await put(api, BAD)
    assert answer.status_code == 422
    body = answer.json()
    assert body["detail"] == "the journey does not validate"
    assert {e["path"] for e in body["errors"]} == BAD_PATHS
    assert all(e["message"] for e in body["errors"])
    assert api.store.current == {}
    template = await put(api, document({"send": {"to": "owner", "template": "nope"}}))
    assert [e["path"] for e in template.json()["errors"]] == ["steps.0.send.template"]


@pytest.mark.parametrize(
    ("content", "path"),
    [("name: [unclosed", "(document)"), ("[1, 2]", "(document)"), (b"\xff\xfe", "(document)")],
)
async def test_a_body_that_is_no_document_is_refused_at_the_document(
    api: Api, content: str | bytes, path: str
) -> None:
    answer = await api.http.put(
        PATH, content=content, headers={**AS_ADMIN, "Content-Type": "application/yaml"}
    )
    assert answer.status_code == 422
    assert [e["path"] for e in answer.json()["errors"]] == [path]


async def test_a_body_whose_name_is_not_the_paths_is_refused(api: Api) -> None:
    answer = await api.http.put("/v1/journeys/other-name", json=DOC, headers=AS_ADMIN)
    assert answer.status_code == 422
    assert answer.json()["errors"] == [{"path": "name", "message": f"'{NAME}' is not 'other-name'"}]


async def test_a_journey_its_versions_and_the_list_are_read_back(api: Api) -> None:
    await put(api)
    await put(
        api, document({"id": "hello", **send("customer")}, title={"en": "Hi", "zh-CN": "你好"})
    )
    listed = await api.http.get("/v1/journeys", headers=AS_READER)
    (only,) = listed.json()
    assert only == {
        "name": NAME,
        "version": 2,
        "enabled": False,
        "deleted": False,
        "updated_at": only["updated_at"],
        "updated_by": "ops",
        "subject": "customer",
        "trigger": "event",
        "title": {"en": "Hi", "zh-CN": "你好"},
        "steps": 1,
    }
    one = (await api.http.get(PATH, headers=AS_READER)).json()
    assert one["definition"]["steps"][0]["send"]["to"] == "customer"
    history = (await api.http.get(f"{PATH}/versions", headers=AS_READER)).json()
    assert [(c["version"], c["what"], c["by"]) for c in history] == [
        (2, "updated", "ops"),
        (1, "created", "ops"),
    ]
    assert history[0]["summary"] == ["title changed", "step hello changed"]
    first = (await api.http.get(f"{PATH}/versions/1", headers=AS_READER)).json()
    assert (first["version"], first["definition"]["steps"][0]["send"]["to"]) == (1, "owner")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/journeys/nobody",
        "/v1/journeys/nobody/versions",
        "/v1/journeys/nobody/versions/1",
        f"{PATH}/versions/7",
    ],
)
async def test_what_does_not_exist_is_404(api: Api, path: str) -> None:
    await put(api)
    assert (await api.http.get(path, headers=AS_READER)).status_code == 404


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("DELETE", ""), ("POST", ":enable"), ("POST", ":disable"), ("POST", ":dry-run")],
)
async def test_changing_a_journey_that_does_not_exist_is_404(
    api: Api, method: str, suffix: str
) -> None:
    answer = await api.http.request(method, f"/v1/journeys/nobody{suffix}", headers=AS_ADMIN)
    assert answer.status_code == 404


async def test_validate_checks_without_storing(api: Api) -> None:
    good = await api.http.post(f"{PATH}:validate", json=DOC, headers=AS_READER)
    assert good.json() == {"valid": True, "errors": [], "steps": ["hello"]}
    bad = await api.http.post(f"{PATH}:validate", json=BAD, headers=AS_READER)
    assert bad.status_code == 422
    assert {e["path"] for e in bad.json()["errors"]} == BAD_PATHS
    assert api.store.current == {}


async def test_enable_and_disable_are_reflected_and_recorded(api: Api) -> None:
    await put(api)
    on = await api.http.post(f"{PATH}:enable", headers=AS_ADMIN)
    assert (on.status_code, on.json()["enabled"]) == (200, True)
    assert (await api.http.get(PATH, headers=AS_READER)).json()["enabled"] is True
    assert api.catalog.current[NAME].running
    newer = await put(api, document({"id": "hello", **send("manager")}))
    assert newer.json()["enabled"] is True  # a new version keeps it switched on
    off = await api.http.post(f"{PATH}:disable", headers=AS_ADMIN)
    assert off.json()["enabled"] is False
    assert (await api.http.get(PATH, headers=AS_READER)).json()["enabled"] is False
    assert not api.catalog.current[NAME].running
    history = (await api.http.get(f"{PATH}/versions", headers=AS_READER)).json()
    assert [c["what"] for c in history] == ["disabled", "updated", "enabled", "created"]


async def test_a_definitions_enabled_is_applied_by_put(api: Api) -> None:
    answer = await put(api, {**DOC, "enabled": True})
    assert answer.json()["enabled"] is True
    same = await put(api, {**DOC, "enabled": False})
    assert (same.json()["version"], same.json()["enabled"]) == (1, False)
    assert same.json()["change"]["what"] == "disabled"


async def test_delete_hides_the_journey_and_a_put_restores_it(api: Api) -> None:
    await put(api)
    gone = await api.http.delete(PATH, headers=AS_ADMIN)
    assert gone.status_code == 204
    assert (await api.http.get(PATH, headers=AS_READER)).status_code == 404
    assert (await api.http.get("/v1/journeys", headers=AS_READER)).json() == []
    assert (await api.http.delete(PATH, headers=AS_ADMIN)).status_code == 404
    assert api.catalog.current[NAME].deleted  # runs still find their version
    back = await put(api)
    assert back.status_code == 201
    assert (back.json()["version"], back.json()["change"]["what"]) == (2, "restored")


async def test_a_dry_run_replays_the_stored_or_the_given_definition(api: Api) -> None:
    await put(api)
    window = {"from": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00"}
    answer = await api.http.post(f"{PATH}:dry-run", json=window, headers=AS_ADMIN)
    assert answer.json() == {"journey": NAME, "version": 1, "published": False}
    journey, version, since, until = api.dry_run.calls[-1]
    assert (journey.steps[0].id, version) == ("hello", 1)
    assert (since, until) == (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
    trial = document({"id": "other", **send()})
    tried = await api.http.post(f"{PATH}:dry-run", json={"definition": trial}, headers=AS_ADMIN)
    assert tried.json()["version"] == 2  # what it would become
    journey, _, since, until = api.dry_run.calls[-1]
    assert (journey.steps[0].id, since) == ("other", None)
    assert until.tzinfo is not None
    assert api.store.current[NAME].version == 1  # nothing stored
    same = await api.http.post(f"{PATH}:dry-run", json={"definition": DOC}, headers=AS_ADMIN)
    assert same.json()["version"] == 1


async def test_a_dry_run_with_a_bad_definition_or_window_is_refused(api: Api) -> None:
    await put(api)
    bad = await api.http.post(f"{PATH}:dry-run", json={"definition": BAD}, headers=AS_ADMIN)
    assert (bad.status_code, {e["path"] for e in bad.json()["errors"]}) == (422, BAD_PATHS)
    backwards = {"from": "2026-03-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"}
    window = await api.http.post(f"{PATH}:dry-run", json=backwards, headers=AS_ADMIN)
    assert window.status_code == 422
    typo = await api.http.post(f"{PATH}:dry-run", json={"form": "2026-01-01"}, headers=AS_ADMIN)
    assert typo.status_code == 422
    assert api.dry_run.calls == []


# -- journey files ---------------------------------------------------------------------------


def write(directory: Path, name: str, doc: dict[str, Any] | str) -> None:
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc, allow_unicode=True)
    if name.endswith(".json") and not isinstance(doc, str):
        text = json.dumps(doc)
    (directory / name).write_text(text, encoding="utf-8")


async def test_applying_a_directory_is_idempotent(tmp_path: Path) -> None:
    store = InMemoryJourneyStore()
    write(tmp_path, "a.yaml", {**DOC, "name": "alpha"})
    write(tmp_path, "b.json", {**DOC, "name": "beta", "enabled": True})
    write(tmp_path, "notes.txt", "not a journey")
    first = await apply_directory(store, tmp_path, "file:journeys", TEMPLATE_ROOT)
    assert [(r.file, r.name, r.outcome, r.version) for r in first] == [
        ("a.yaml", "alpha", "created", 1),
        ("b.json", "beta", "created", 1),
    ]
    assert {n: p.enabled for n, p in store.current.items()} == {"alpha": False, "beta": True}
    again = await apply_directory(store, tmp_path, "file:journeys", TEMPLATE_ROOT)
    assert [r.outcome for r in again] == ["unchanged", "unchanged"]
    assert [r.as_json() for r in again] == [
        {"file": "a.yaml", "name": "alpha", "outcome": "unchanged", "version": 1},
        {"file": "b.json", "name": "beta", "outcome": "unchanged", "version": 1},
    ]
    assert len(await store.versions()) == 2


async def test_a_file_without_enabled_keeps_the_state_the_api_gave(tmp_path: Path) -> None:
    store = InMemoryJourneyStore()
    write(tmp_path, "a.yaml", {**DOC, "name": "alpha"})
    await apply_directory(store, tmp_path, "file:journeys")
    await store.set_enabled("alpha", True, "ops")
    write(tmp_path, "a.yaml", {**document({"id": "bye", **send()}), "name": "alpha"})
    (changed,) = await apply_directory(store, tmp_path, "file:journeys")
    assert (changed.outcome, changed.version) == ("updated", 2)
    assert store.current["alpha"].enabled is True
    write(
        tmp_path, "a.yaml", {**document({"id": "bye", **send()}), "name": "alpha", "enabled": False}
    )
    (switched,) = await apply_directory(store, tmp_path, "file:journeys")
    assert (switched.outcome, switched.version) == ("disabled", 2)
    assert store.current["alpha"].enabled is False


async def test_an_invalid_file_is_refused_with_its_errors_and_the_others_are_applied(
    tmp_path: Path,
) -> None:
    store = InMemoryJourneyStore()
    write(tmp_path, "a-bad.yaml", {**BAD, "name": "bad"})
    write(tmp_path, "b-broken.yml", "name: [unclosed")
    write(tmp_path, "c-good.yaml", {**DOC, "name": "good"})
    results = await apply_directory(store, tmp_path, "file:journeys", TEMPLATE_ROOT)
    bad, broken, good = results
    assert (bad.outcome, bad.name, {e["path"] for e in bad.errors}) == ("invalid", None, BAD_PATHS)
    assert (broken.outcome, [e["path"] for e in broken.errors]) == ("invalid", ["(document)"])
    assert (good.outcome, good.name) == ("created", "good")
    assert set(store.current) == {"good"}
    assert bad.as_json()["errors"] == bad.errors


async def test_a_missing_directory_applies_nothing(tmp_path: Path) -> None:
    assert await apply_directory(InMemoryJourneyStore(), tmp_path / "none", "file:x") == []
