"""The notifier's HTTP API.

Public (signed links): ``/v1/unsubscribe`` — RFC 8058 one-click unsubscribe. Mail clients POST
``List-Unsubscribe=One-Click`` to the URL of the ``List-Unsubscribe`` header; a person who
opens the link gets a page with a button (a GET never unsubscribes: link scanners open links).

With an API key of scope ``notifier:admin``: recipients' preferences, the suppression list,
the ledger entry of an action, and template previews.

Tasks (list, complete, snooze, reassign): with a ``notifier:admin`` key, or with a
``tasks:own`` key, bound to a member of staff, for that member's own tasks only. Every change
is published as an event (:mod:`services.notifier.publisher`) before the store is changed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Annotated, Any, Self, TypeVar

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import HTMLResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from services.notifier.entry import Entry
from services.notifier.ledger import Ledger
from services.notifier.policy import MARKETING, Preferences
from services.notifier.preferences import PolicyStore
from services.notifier.publisher import TaskEvents
from services.notifier.tasks import Status, Task, TaskChange, Tasks
from services.notifier.templates import TemplateError, Templates
from services.notifier.unsubscribe import Unsubscribes
from shared.apikeys import NOTIFIER_ADMIN, TASKS_OWN, ApiKeySpec, KeyRing, require_scope
from shared.errors import is_transient
from shared.events.fields import Id, Text

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@/\-]*$"  # a staff id (shared.events.fields.Id)
MAX_SNOOZE = timedelta(days=366)
PUBLISHING, STORING = "Kafka (nothing was changed)", "MongoDB"
T = TypeVar("T")
# at module level: FastAPI resolves these string annotations in the module's namespace
ByQuery = Annotated[str | None, Query(pattern=ID_PATTERN, max_length=128)]


class PreviewRequest(BaseModel):
    locale: str = "en"
    data: dict[str, Any] | None = Field(None, description="template data; the sample if absent")
    unsubscribe_url: str | None = None


class PreviewResponse(BaseModel):
    template: str
    locale: str
    subject: str
    text: str
    html: str


class PreferencesBody(BaseModel):
    categories: dict[str, bool] = Field(default_factory=dict)
    channels: dict[str, bool] = Field(default_factory=dict)


class Suppression(BaseModel):
    address: str
    reason: str = "manual"


class CompleteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Text | None = None
    by: Id | None = Field(None, description="who did it (admin keys; else the key's staff)")


class SnoozeBody(BaseModel):
    """Either ``until`` (exact: a retry is the same snooze) or ``hours`` from now."""

    model_config = ConfigDict(extra="forbid")

    until: AwareDatetime | None = None
    hours: float | None = Field(None, gt=0, le=MAX_SNOOZE.total_seconds() / 3600)
    by: Id | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.until is None) == (self.hours is None):
            raise ValueError("give either until or hours")
        return self


class ReassignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner_id: Id
    by: Id | None = None


def unsubscribe_router(unsubscribes: Unsubscribes, policy: PolicyStore) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["unsubscribe"])

    async def opt_out(recipient: str, category: str, token: str) -> None:
        if not unsubscribes.valid(recipient, category, token):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid unsubscribe link")
        prefs = (await policy.preferences([recipient])).get(recipient) or Preferences(
            recipient=recipient
        )
        prefs.categories[category] = False
        prefs.updated_at = datetime.now(UTC)
        await policy.set_preferences(prefs)

    @router.post("/unsubscribe", summary="One-click unsubscribe (RFC 8058)")
    async def one_click(
        r: Annotated[str, Query(description="recipient")],
        t: Annotated[str, Query(description="signature")],
        c: Annotated[str, Query(description="category")] = MARKETING,
    ) -> HTMLResponse:
        """The body (``List-Unsubscribe=One-Click``) carries nothing the signed URL does not."""
        await opt_out(r, c, t)
        return HTMLResponse("<p>You are unsubscribed. 您已退订。</p>")

    @router.get("/unsubscribe", response_class=HTMLResponse, summary="Unsubscribe page")
    async def page(
        r: Annotated[str, Query()],
        t: Annotated[str, Query()],
        c: Annotated[str, Query()] = MARKETING,
    ) -> HTMLResponse:
        if not unsubscribes.valid(r, c, t):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid unsubscribe link")
        action = escape(unsubscribes.url(r, c), quote=True)
        return HTMLResponse(
            "<!doctype html><meta charset=utf-8><title>Unsubscribe</title>"
            f'<form method="post" action="{action}">'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            "<p>Stop receiving these messages? 不再接收此类消息？</p>"
            "<button type=submit>Unsubscribe · 退订</button></form>"
        )

    return router


def admin_router(
    keys: KeyRing,
    policy: PolicyStore,
    ledger: Ledger,
    templates: Templates,
) -> APIRouter:
    # every route here needs a key with the notifier:admin scope (a router-wide dependency:
    # a per-parameter alias defined in this function would be unresolvable for FastAPI under
    # `from __future__ import annotations`, and the routes would not authenticate at all)
    router = APIRouter(
        prefix="/v1", tags=["admin"], dependencies=[require_scope(keys, NOTIFIER_ADMIN)]
    )

    @router.get("/preferences/{recipient}", response_model=Preferences)
    async def get_preferences(recipient: str) -> Preferences:
        found = (await policy.preferences([recipient])).get(recipient)
        return found or Preferences(recipient=recipient)

    @router.put("/preferences/{recipient}", response_model=Preferences)
    async def put_preferences(recipient: str, body: PreferencesBody) -> Preferences:
        prefs = Preferences(
            recipient=recipient,
            categories=body.categories,
            channels=body.channels,
            updated_at=datetime.now(UTC),
        )
        await policy.set_preferences(prefs)
        return prefs

    @router.post("/suppressions", status_code=status.HTTP_204_NO_CONTENT)
    async def add_suppression(body: Suppression) -> None:
        await policy.suppress(body.address, body.reason, datetime.now(UTC))

    @router.delete("/suppressions/{address}", status_code=status.HTTP_204_NO_CONTENT)
    async def remove_suppression(address: str) -> None:
        if not await policy.unsuppress(address):
            raise HTTPException(status.HTTP_404_NOT_FOUND, "not suppressed")

    @router.get("/deliveries/{key}", response_model=Entry, summary="An action's ledger entry")
    async def delivery(key: str) -> Entry:
        entry = await ledger.get(key)
        if entry is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such action")
        return entry

    @router.get("/templates", summary="Templates and their locales")
    async def list_templates() -> dict[str, list[str]]:
        return {name: templates.locales(name) for name in templates.names()}

    @router.post("/templates/{name}/preview", response_model=PreviewResponse)
    async def preview(name: str, body: PreviewRequest) -> PreviewResponse:
        try:
            data = body.data if body.data is not None else templates.sample(name)
            locale = templates.resolve_locale(name, body.locale)
            rendered = templates.render(
                name, locale, data, {"unsubscribe_url": body.unsubscribe_url}
            )
        except TemplateError as exc:
            code = 404 if exc.reason == "unknown_template" else 422
            raise HTTPException(code, str(exc)) from exc
        return PreviewResponse(
            template=name,
            locale=locale,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
        )

    return router


def tasks_router(
    keys: KeyRing, tasks: Tasks, events: TaskEvents, clock: Callable[[], datetime]
) -> APIRouter:
    """Tasks for a ``notifier:admin`` key (any task; the actor is the request's ``by``) or a
    ``tasks:own`` key (its staff member's tasks only, and the actor is that member)."""
    router = APIRouter(prefix="/v1", tags=["tasks"])
    allowed = require_scope(keys, NOTIFIER_ADMIN, TASKS_OWN)  # a default: see admin_router

    async def open_task(task_id: str, key: ApiKeySpec, *, done_ok: bool = False) -> Task:
        """The task a key may change: 404 unknown, 403 another's, 409 done (unless ok)."""
        task = await tasks.get(task_id)
        if task is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such task")
        staff = _own_staff(key)
        if staff is not None and task.owner != staff:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "not your task")
        if task.status == "done" and not done_ok:
            raise HTTPException(status.HTTP_409_CONFLICT, "the task is done")
        return task

    def changed(change: TaskChange) -> Task:
        if change.task is None:  # deleted meanwhile (a done task's retention)
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such task")
        return change.task

    @router.get("/tasks", response_model=list[Task], summary="Tasks, oldest due first")
    async def list_tasks(
        owner: str | None = None,
        team: str | None = None,
        status_: Annotated[Status | None, Query(alias="status")] = None,
        overdue: Annotated[bool | None, Query(description="open and due before now")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        key: ApiKeySpec = allowed,
    ) -> list[Task]:
        staff = _own_staff(key)
        if staff is not None and owner not in (None, staff):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "a tasks:own key lists its own tasks")
        return await tasks.list(owner or staff, team, status_, overdue, clock(), limit)

    @router.post("/tasks/{task_id}/complete", response_model=Task, summary="Complete a task")
    async def complete_task(
        task_id: str,
        body: CompleteBody | None = None,
        by: ByQuery = None,
        key: ApiKeySpec = allowed,
    ) -> Task:
        """Idempotent: a done task is answered as it is, and nothing is published again."""
        body = body or CompleteBody()
        task = await open_task(task_id, key, done_ok=True)
        if task.status == "done":
            return task
        now, actor = clock(), _actor(key, body.by or by)
        await _or_503(events.completed(task, actor, now, body.note), PUBLISHING)
        return changed(await _or_503(tasks.complete(task_id, actor, now, body.note), STORING))

    @router.post("/tasks/{task_id}/snooze", response_model=Task, summary="Put a task off")
    async def snooze_task(
        task_id: str, body: SnoozeBody, by: ByQuery = None, key: ApiKeySpec = allowed
    ) -> Task:
        task, now = await open_task(task_id, key), clock()
        until = body.until if body.until is not None else now + timedelta(hours=body.hours or 0)
        until = until.astimezone(UTC).replace(microsecond=0)  # as stored: whole seconds
        if not now < until <= now + MAX_SNOOZE:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, "until must be in the next 366 days"
            )
        if task.due_at == until:
            return task
        actor = _actor(key, body.by or by)
        await _or_503(events.snoozed(task, until, actor, now), PUBLISHING)
        return _unless_done(
            changed(await _or_503(tasks.snooze(task_id, until, actor, now), STORING))
        )

    @router.post("/tasks/{task_id}/reassign", response_model=Task, summary="Give a task away")
    async def reassign_task(
        task_id: str, body: ReassignBody, by: ByQuery = None, key: ApiKeySpec = allowed
    ) -> Task:
        task = await open_task(task_id, key)
        if task.owner == body.owner_id:
            return task
        now, actor = clock(), _actor(key, body.by or by)
        await _or_503(events.reassigned(task, body.owner_id, actor, now), PUBLISHING)
        change = tasks.reassign(task_id, body.owner_id, actor, now)
        return _unless_done(changed(await _or_503(change, STORING)))

    return router


def _own_staff(key: ApiKeySpec) -> str | None:
    """The member of staff a key is limited to; ``None`` for an admin key (every task)."""
    if NOTIFIER_ADMIN in key.scopes:
        return None
    if key.staff_id is None:  # ApiKeySpec refuses a tasks:own key without one
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the key is bound to no member of staff")
    return key.staff_id


def _actor(key: ApiKeySpec, by: str | None) -> str | None:
    """Who made a change: an admin key's ``by``, else the key's member of staff."""
    return by if NOTIFIER_ADMIN in key.scopes else key.staff_id


def _unless_done(task: Task) -> Task:
    """Completed while the change was being published: the change did not apply."""
    if task.status == "done":
        raise HTTPException(status.HTTP_409_CONFLICT, "the task is done")
    return task


async def _or_503(work: Awaitable[T], what: str) -> T:
    """Await ``work``; its dependency away (Kafka, MongoDB) is 503: the request may be
    retried, and a retry publishes the same event again."""
    try:
        return await work
    except Exception as exc:
        if not is_transient(exc):
            raise
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"{what} is unavailable; retry later",
            headers={"Retry-After": "5"},
        ) from exc
