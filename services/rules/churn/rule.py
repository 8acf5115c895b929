"""Churn risk: "warn the owner when a customer has probably stopped buying".

A customer's risk is 1 - P(alive) under the fitted BG/NBD model, or, for customers with a single
purchase (P(alive) = 1 by construction), the recency-based risk of the same model (see
:func:`~services.rules.churn.bgnbd.churn_risk`). Times are in days since the first order.

Hysteresis: a customer *enters* the at-risk state when the risk reaches ``enter_risk`` and
*leaves* it only when it falls to ``leave_risk`` (after new orders), so a customer near the line
does not flap. Each change is published as ``upkeep.customer.churn_risk_changed.v1``; entering
also alerts the owner. Silence raises the risk with time alone, so the rule sets one timer at the
moment the risk will cross ``enter_risk`` — no periodic re-scoring of every customer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.rules.churn.bgnbd import BgNbdParams, churn_risk, p_alive, time_to_risk
from services.rules.churn.weekly import WEEKLY_LIST, at_risk_lists
from services.rules.sdk import (
    Action,
    ActionKind,
    Decision,
    Emit,
    Event,
    RuleContext,
    Schedule,
    SetTimer,
    Timer,
    Unrouted,
)
from services.rules.state import CustomerState, SubjectState
from shared.events.types import CustomerInteraction, CustomerUpserted

DAY = 86_400.0
_CUSTOMER = frozenset({"customer_id", "customer_name"})


class ChurnConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    enter_risk: float = Field(default=0.7, gt=0, lt=1)
    leave_risk: float = Field(default=0.5, gt=0, lt=1)
    kind: ActionKind = "email"
    refit_every_hours: float = Field(default=24, gt=0)
    min_customers: int = Field(default=50, ge=2)  # fewer: no fit, no alerts
    weekly_list_weekday: int = Field(default=0, ge=0, le=6)  # Monday
    weekly_list_hour_utc: int = Field(default=1, ge=0, le=23)

    @model_validator(mode="after")
    def _hysteresis(self) -> ChurnConfig:
        if self.leave_risk >= self.enter_risk:
            raise ValueError("leave_risk must be below enter_risk")
        return self


@dataclass
class ChurnModel:
    """The fitted parameters, shared by the refit job (writer) and the rule (reader)."""

    params: BgNbdParams | None = None
    fitted_at: datetime | None = None
    customers: int = 0
    log_likelihood: float | None = None


@dataclass(frozen=True)
class Score:
    x: float
    t_x: float
    t: float
    risk: float
    p_alive: float


def score(customer: CustomerState, params: BgNbdParams, now: datetime) -> Score | None:
    """The customer's summary (in days) and risk, or None before their first order."""
    if customer.orders < 1 or customer.first_order_at is None or customer.last_order_at is None:
        return None
    first = customer.first_order_at
    x = float(customer.orders - 1)
    t_x = (customer.last_order_at - first).total_seconds() / DAY if x > 0 else 0.0
    t = max((now - first).total_seconds() / DAY, t_x)
    return Score(x, t_x, t, churn_risk(params, x, t_x, t), p_alive(params, x, t_x, t))


@dataclass
class ChurnRisk:
    config: ChurnConfig = field(default_factory=ChurnConfig)
    model: ChurnModel = field(default_factory=ChurnModel)
    name: str = "churn"
    templates: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: {
            "churn_risk_alert": _CUSTOMER | {"risk", "p_alive", "orders", "last_order_at"},
            "churn_weekly_list": frozenset({"week", "count", "customers"}),  # the weekly job
        }
    )

    @property
    def schedules(self) -> Sequence[Schedule]:
        """Each owner's weekly list of their customers at risk."""
        return (
            Schedule(
                WEEKLY_LIST,
                hour_utc=self.config.weekly_list_hour_utc,
                weekday=self.config.weekly_list_weekday,
                kind="customer",
                where={"customer.at_risk": True},
            ),
        )

    def on_schedule(
        self, job: Schedule, slot: datetime, subjects: Sequence[SubjectState], ctx: RuleContext
    ) -> list[Action]:
        return at_risk_lists(subjects, slot, self.name) if job.name == WEEKLY_LIST else []

    def on_event(self, event: Event, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        triggers = CustomerInteraction | CustomerUpserted
        if isinstance(event.payload, triggers) and subject.customer is not None:
            yield from self._evaluate(subject, subject.customer, ctx)

    def on_timer(self, timer: Timer, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        if subject.customer is not None:
            yield from self._evaluate(subject, subject.customer, ctx)

    def _evaluate(
        self, subject: SubjectState, customer: CustomerState, ctx: RuleContext
    ) -> Iterator[Decision]:
        now = ctx.now
        params = self.model.params
        found = score(customer, params, now) if params is not None else None
        if params is None or found is None:
            return
        cfg = self.config
        if not customer.at_risk and found.risk >= cfg.enter_risk:
            yield Emit(
                "upkeep.customer.churn_risk_changed.v1",
                {
                    "customer_id": customer.customer_id,
                    "at_risk": True,
                    "risk": round(found.risk, 6),
                    "changed_at": now.isoformat(),
                },
            )
            if customer.owner_id is not None:
                assert customer.last_order_at is not None
                episode = customer.last_order_at.date().isoformat()
                yield Action.to_staff(
                    self.name,
                    subject,
                    f"churn:{customer.customer_id}:at-risk:{episode}",
                    customer.owner_id,
                    ctx,
                    template="churn_risk_alert",
                    due_at=now,
                    kind=cfg.kind,
                    purpose="churn_alert",
                    data={
                        "customer_id": customer.customer_id,
                        "customer_name": customer.name,
                        "risk": round(found.risk, 3),
                        "p_alive": round(found.p_alive, 3),
                        "orders": customer.orders,
                        "last_order_at": episode,
                    },
                )
            else:
                yield Unrouted("no_owner")
        elif customer.at_risk and found.risk <= cfg.leave_risk:
            yield Emit(
                "upkeep.customer.churn_risk_changed.v1",
                {
                    "customer_id": customer.customer_id,
                    "at_risk": False,
                    "risk": round(found.risk, 6),
                    "changed_at": now.isoformat(),
                },
            )
        elif not customer.at_risk:
            crossing = time_to_risk(params, found.x, found.t_x, cfg.enter_risk)
            assert customer.first_order_at is not None
            due = customer.first_order_at + timedelta(days=crossing)
            if due > now:
                yield SetTimer("crossing", due)
