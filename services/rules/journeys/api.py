"""The journeys API of the rules service (``docs/journeys.md``). Reading needs a key with
``rules:read`` (or ``rules:admin``); changing, and dry runs, ``rules:admin``. Every change is
recorded with the key's name as its author.

A definition is sent as JSON (``application/json``) or YAML (``application/yaml``). One that
does not validate is answered ``422`` with every error and its path::

    {"detail": "the journey does not validate",
     "errors": [{"path": "steps.2.wait_for.timeout", "message": "not a duration ('7 days') …"}]}
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services.rules.journeys.catalog import Catalog, Published
from services.rules.journeys.definition import Invalid, Journey, parse_document, validate
from services.rules.journeys.store import Conflict, JourneyStore, refresh
from shared.apikeys import RULES_ADMIN, RULES_READ, ApiKeySpec, KeyRing, require_scope

DryRunner = Callable[[Journey, int, datetime | None, datetime], Awaitable[dict[str, Any]]]
MAX_BODY = 256 * 1024
DOCUMENT_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        # the document's schema is docs/schemas/journey.v1.json (the API validates it itself)
        "application/json": {"schema": {"type": "object"}},
        "application/yaml": {"schema": {"type": "string"}},
    },
}


class DryRunRequest(BaseModel):
    """Replay ``[from, until]`` (default: the whole topic, until now) with ``definition`` (default:
    the stored current version)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: datetime | None = Field(default=None, alias="from")
    until: datetime | None = None
    definition: dict[str, Any] | None = None


def published_json(p: Published, *, definition: bool = True) -> dict[str, Any]:
    journey = p.journey
    found: dict[str, Any] = {
        "name": p.name,
        "version": p.version,
        "enabled": p.enabled,
        "deleted": p.deleted,
        "updated_at": p.updated_at.isoformat() if p.updated_at else None,
        "updated_by": p.updated_by,
        "subject": journey.subject,
        "trigger": journey.trigger.kind,
        "title": journey.title.model_dump(by_alias=True) if journey.title else None,
        "steps": len(journey.steps),
    }
    if definition:
        found["definition"] = journey.definition()
    return found


def _invalid(exc: Invalid) -> JSONResponse:
    return JSONResponse(
        {"detail": "the journey does not validate", "errors": exc.errors},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


async def _document(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "at most 256 KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid([{"path": "(document)", "message": "not UTF-8"}]) from None
    return parse_document(text, "body")


def journeys_router(
    store: JourneyStore,
    catalog: Catalog,
    keys: KeyRing,
    template_root: Path,
    dry_runner: DryRunner,
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["journeys"])
    # the keys are parameter defaults: an ``Annotated`` alias of a name local to this function
    # is unresolvable for FastAPI under ``from __future__ import annotations`` (the parameter
    # would become a query parameter and the route would not authenticate at all)
    reader = require_scope(keys, RULES_READ, RULES_ADMIN)
    admin = require_scope(keys, RULES_ADMIN)

    async def found(name: str) -> Published:
        published = await store.get(name)
        if published is None or published.deleted:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no journey {name!r}")
        return published

    async def changed() -> None:
        await refresh(store, catalog)  # this replica at once; the others within seconds

    def checked(document: dict[str, Any], name: str) -> Journey:
        document.setdefault("name", name)
        journey = validate(document, template_root)
        if journey.name != name:
            raise Invalid([{"path": "name", "message": f"{journey.name!r} is not {name!r}"}])
        return journey

    @router.get("/journeys", summary="Every journey: its current version and state")
    async def list_journeys(key: ApiKeySpec = reader) -> list[dict[str, Any]]:
        return [
            published_json(p, definition=False)
            for p in sorted(await store.all(), key=lambda p: p.name)
            if not p.deleted
        ]

    @router.get("/journeys/{name}", summary="A journey's current version, its state and definition")
    async def get_journey(name: str, key: ApiKeySpec = reader) -> dict[str, Any]:
        return published_json(await found(name))

    @router.get("/journeys/{name}/versions", summary="Who changed what, newest first")
    async def history(name: str, key: ApiKeySpec = reader) -> list[dict[str, Any]]:
        await found(name)
        return [c.as_json() for c in await store.history(name)]

    @router.get("/journeys/{name}/versions/{version}", summary="One version's definition")
    async def version(name: str, version: int, key: ApiKeySpec = reader) -> dict[str, Any]:
        journey = catalog.version(name, version)
        if journey is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no version {version} of {name!r}")
        return {"name": name, "version": version, "definition": journey.definition()}

    @router.put(
        "/journeys/{name}",
        summary="Create a journey or make a new version of it (unchanged: nothing happens)",
        openapi_extra={"requestBody": DOCUMENT_BODY},
        responses={201: {"description": "created"}, 422: {"description": "does not validate"}},
    )
    async def put_journey(name: str, request: Request, key: ApiKeySpec = admin) -> Response:
        try:
            journey = checked(await _document(request), name)
        except Invalid as exc:
            return _invalid(exc)
        try:
            published, change = await store.put(journey, key.name, journey.enabled)
        except Conflict as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        await changed()
        body = {**published_json(published), "change": change.as_json() if change else None}
        created = change is not None and change.what in ("created", "restored")
        return JSONResponse(body, status_code=201 if created else 200)

    @router.delete(
        "/journeys/{name}",
        status_code=status.HTTP_204_NO_CONTENT,
        summary="Delete a journey: no one enters, runs leave at their next step; versions stay",
    )
    async def delete_journey(name: str, key: ApiKeySpec = admin) -> Response:
        await found(name)
        try:
            await store.delete(name, key.name)
        except Conflict as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        await changed()
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.post(
        "/journeys/{name}:validate",
        summary="Check a definition without storing it: every error with its path",
        openapi_extra={"requestBody": DOCUMENT_BODY},
    )
    async def validate_journey(name: str, request: Request, key: ApiKeySpec = reader) -> Response:
        try:
            journey = checked(await _document(request), name)
        except Invalid as exc:
            return _invalid(exc)
        return JSONResponse({"valid": True, "errors": [], "steps": [s.id for s in journey.steps]})

    async def switch(name: str, on: bool, by: str) -> dict[str, Any]:
        await found(name)
        try:
            published, _ = await store.set_enabled(name, on, by)
        except Conflict as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        await changed()
        return published_json(published, definition=False)

    @router.post("/journeys/{name}:enable", summary="Switch a journey on: subjects may enter")
    async def enable(name: str, key: ApiKeySpec = admin) -> dict[str, Any]:
        return await switch(name, True, key.name)

    @router.post(
        "/journeys/{name}:disable",
        summary="Switch a journey off: no one enters, runs leave at their next step",
    )
    async def disable(name: str, key: ApiKeySpec = admin) -> dict[str, Any]:
        return await switch(name, False, key.name)

    @router.post(
        "/journeys/{name}:dry-run",
        summary="Replay history with the journey as written: who would enter, what each step "
        "would send, sample messages; nothing is published",
    )
    async def dry_run(
        name: str,
        key: ApiKeySpec = admin,
        body: Annotated[DryRunRequest | None, Body()] = None,
    ) -> Response:
        request = body or DryRunRequest()
        if request.definition is not None:
            try:
                journey = checked(dict(request.definition), name)
            except Invalid as exc:
                return _invalid(exc)
            current = await store.get(name)
            same = current is not None and current.journey.definition() == journey.definition()
            version = (
                current.version if same and current else (current.version + 1 if current else 1)
            )
        else:
            published = await found(name)
            journey, version = published.journey, published.version
        until = request.until or datetime.now(UTC)
        since = request.from_
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        if until.tzinfo is None:
            until = until.replace(tzinfo=UTC)
        if since is not None and since > until:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "from is after until")
        return JSONResponse(await dry_runner(journey, version, since, until))

    return router


def in_thread(run: DryRunner) -> DryRunner:
    """Run a dry run on its own event loop in a worker thread, so that the service keeps
    consuming while it replays."""

    async def threaded(
        journey: Journey, version: int, since: datetime | None, until: datetime
    ) -> dict[str, Any]:
        return await asyncio.to_thread(lambda: asyncio.run(run(journey, version, since, until)))  # type: ignore[arg-type]

    return threaded
