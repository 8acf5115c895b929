"""Read-only HTTP API of the rules service: loaded rules, a subject's state and its timers."""

from typing import Any

from fastapi import APIRouter, HTTPException

from services.rules.engine import RulesEngine
from services.rules.store import SubjectStore, TimerStore


def rules_router(engine: RulesEngine, subjects: SubjectStore, timers: TimerStore) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["rules"])

    @router.get("/rules", summary="The rules this replica runs")
    async def list_rules() -> list[dict[str, Any]]:
        return [
            {"name": name, "config": getattr(rule, "config", None)}
            for name, rule in engine.rules.items()
        ]

    @router.get("/subjects/{subject}", summary="A subject's state, e.g. customer:C-1")
    async def subject_state(subject: str) -> dict[str, Any]:
        found = await subjects.load({subject})
        if subject not in found:
            raise HTTPException(404, f"unknown subject {subject}")
        return found[subject].model_dump(mode="json", exclude={"applied"})

    @router.get("/subjects/{subject}/timers", summary="A subject's pending timers")
    async def subject_timers(subject: str) -> list[dict[str, Any]]:
        return [
            {"rule": t.rule, "name": t.name, "due_at": t.due_at.isoformat(), "data": t.data}
            for t in await timers.pending(subject)
        ]

    return router
