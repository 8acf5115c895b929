"""Tiering: "sort customers into A, B and C by how recently, how often and how much they buy"
(RFM), re-evaluated as events arrive and published as ``upkeep.customer.tier_changed.v1`` so
other rules (follow-up) and analytics see it.

Each of recency, frequency and monetary value scores 1-3 against configurable thresholds; the
sum (3-9) picks the tier. Recency falls with time alone, so after each order one timer is set at
the moment the recency score would next drop — no periodic scan of customers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from services.rules.sdk import Decision, Emit, Event, RuleContext, SetTimer, Timer
from services.rules.state import CustomerState, SubjectState
from shared.events.types import CustomerInteraction, CustomerUpserted


class TieringConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    recency_days: tuple[int, int] = (30, 90)  # last order within: score 3, 2 (else 1)
    frequency_orders: tuple[int, int] = (10, 3)  # at least this many orders: score 3, 2
    monetary_value: tuple[Decimal, Decimal] = (Decimal(10_000), Decimal(1_000))
    tier_a_min: int = Field(default=8, ge=3, le=9)
    tier_b_min: int = Field(default=5, ge=3, le=9)


def _score_up(value: Decimal | int, thresholds: tuple[Decimal, Decimal] | tuple[int, int]) -> int:
    high, mid = thresholds
    return 3 if value >= high else 2 if value >= mid else 1


def rfm(customer: CustomerState, now: datetime, cfg: TieringConfig) -> tuple[int, int, int]:
    if customer.last_order_at is None:
        recency = 1
    else:
        days = (now - customer.last_order_at).days
        recency = 3 if days <= cfg.recency_days[0] else 2 if days <= cfg.recency_days[1] else 1
    return (
        recency,
        _score_up(customer.orders, cfg.frequency_orders),
        _score_up(customer.order_value, cfg.monetary_value),
    )


@dataclass
class Tiering:
    config: TieringConfig = field(default_factory=TieringConfig)
    name: str = "tiering"
    templates: Mapping[str, frozenset[str]] = field(default_factory=dict)  # it only emits

    def on_event(self, event: Event, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        triggers = CustomerInteraction | CustomerUpserted
        if isinstance(event.payload, triggers) and subject.customer is not None:
            yield from self._evaluate(subject.customer, ctx.now)

    def on_timer(self, timer: Timer, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        if subject.customer is not None:
            yield from self._evaluate(subject.customer, ctx.now)

    def _evaluate(self, customer: CustomerState, now: datetime) -> Iterator[Decision]:
        scores = rfm(customer, now, self.config)
        total = sum(scores)
        tier = (
            "A"
            if total >= self.config.tier_a_min
            else "B"
            if total >= self.config.tier_b_min
            else "C"
        )
        if tier != customer.tier:
            yield Emit(
                "upkeep.customer.tier_changed.v1",
                {
                    "customer_id": customer.customer_id,
                    "tier": tier,
                    "previous": customer.tier,
                    "recency_score": scores[0],
                    "frequency_score": scores[1],
                    "monetary_score": scores[2],
                    "changed_at": now.isoformat(),
                },
            )
        if customer.last_order_at is not None:
            for days in self.config.recency_days:
                drop = customer.last_order_at + timedelta(days=days + 1)
                if drop > now:
                    yield SetTimer("recency", drop)
                    return
