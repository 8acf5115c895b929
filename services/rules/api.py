"""Read-only HTTP API of the rules service: loaded rules, a subject's state and its timers,
the churn model. Every route needs a key with ``rules:read`` (or ``rules:admin``)."""

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException

from services.rules.churn.rule import ChurnRisk, score
from services.rules.engine import RulesEngine
from services.rules.store import SubjectStore, TimerStore
from shared.apikeys import RULES_ADMIN, RULES_READ, KeyRing, require_scope


def rules_router(
    engine: RulesEngine, subjects: SubjectStore, timers: TimerStore, keys: KeyRing
) -> APIRouter:
    # a router-wide dependency: no route here can forget it
    router = APIRouter(
        prefix="/v1", tags=["rules"], dependencies=[require_scope(keys, RULES_READ, RULES_ADMIN)]
    )

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

    def churn_rule() -> ChurnRisk:
        rule = engine.rules.get("churn")
        if not isinstance(rule, ChurnRisk):
            raise HTTPException(404, "the churn rule is not enabled here")
        return rule

    @router.get("/churn/model", summary="The fitted BG/NBD parameters")
    async def churn_model() -> dict[str, Any]:
        model = churn_rule().model
        if model.params is None:
            raise HTTPException(404, "the churn model has not been fitted yet")
        return {
            **model.params.as_dict(),
            "fitted_at": model.fitted_at,
            "customers": model.customers,
            "log_likelihood": model.log_likelihood,
            "time_unit": "days",
        }

    @router.get("/churn/customers/{customer_id}", summary="A customer's churn risk now")
    async def churn_score(customer_id: str) -> dict[str, Any]:
        rule = churn_rule()
        subject = f"customer:{customer_id}"
        found = (await subjects.load({subject})).get(subject)
        if found is None or found.customer is None:
            raise HTTPException(404, f"unknown customer {customer_id}")
        if rule.model.params is None:
            raise HTTPException(409, "the churn model has not been fitted yet")
        result = score(found.customer, rule.model.params, datetime.now(UTC))
        if result is None:
            raise HTTPException(409, "the customer has no orders yet")
        return {
            "customer_id": customer_id,
            "risk": result.risk,
            "p_alive": result.p_alive,
            "at_risk": found.customer.at_risk,
            "frequency": result.x,
            "recency_days": result.t_x,
            "age_days": result.t,
        }

    return router
