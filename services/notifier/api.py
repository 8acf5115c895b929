"""The notifier's HTTP API.

Public (signed links): ``/v1/unsubscribe`` — RFC 8058 one-click unsubscribe. Mail clients POST
``List-Unsubscribe=One-Click`` to the URL of the ``List-Unsubscribe`` header; a person who
opens the link gets a page with a button (a GET never unsubscribes: link scanners open links).

With an API key of scope ``notifier:admin``: tasks (list, complete), recipients' preferences,
the suppression list, the ledger entry of an action, and template previews.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from services.notifier.entry import Entry
from services.notifier.ledger import Ledger
from services.notifier.policy import MARKETING, Preferences
from services.notifier.preferences import PolicyStore
from services.notifier.tasks import Task, TaskStore
from services.notifier.templates import TemplateError, Templates
from services.notifier.unsubscribe import Unsubscribes
from shared.apikeys import NOTIFIER_ADMIN, KeyRing, require_scope


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
    tasks: TaskStore,
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

    @router.get("/tasks", response_model=list[Task], summary="Tasks, newest due first")
    async def list_tasks(
        owner: str | None = None,
        status_: Annotated[str | None, Query(alias="status", pattern="^(open|done)$")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[Task]:
        return await tasks.list(owner, status_, limit)

    @router.post("/tasks/{task_id}/complete", response_model=Task, summary="Complete a task")
    async def complete_task(task_id: str, by: str | None = None) -> Task:
        task = await tasks.complete(task_id, by, datetime.now(UTC))
        if task is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such task")
        return task

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
