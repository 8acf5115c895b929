"""After-sales follow-up: "N days after an order or a closed ticket, follow up — how and when
depends on the customer's tier" (tier A: a call task for the owner after 7 days; tier C: an
automated e-mail after 14). One timer per interaction, named after it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.rules.builtin.catchup import CatchUp
from services.rules.calendar import at_local, local_date
from services.rules.sdk import (
    Action,
    ActionKind,
    Decision,
    Event,
    RuleContext,
    SetTimer,
    Timer,
    Unrouted,
)
from services.rules.state import SubjectState
from shared.events.types import CustomerInteraction

_DATA = frozenset({"customer_id", "customer_name", "interaction_id", "tier"})


class FollowUpStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after_days: int = Field(ge=0)
    kind: ActionKind


def _default_steps() -> dict[str, FollowUpStep]:
    return {
        "A": FollowUpStep(after_days=7, kind="task"),
        "B": FollowUpStep(after_days=10, kind="email"),
        "C": FollowUpStep(after_days=14, kind="email"),
    }


class FollowUpConfig(CatchUp):
    enabled: bool = True
    local_time: time = time(10, 0)
    by_tier: dict[str, FollowUpStep] = Field(default_factory=_default_steps)
    untiered: str = "C"  # which tier's step applies before a customer has a tier
    after_orders: bool = True
    after_closed_tickets: bool = True
    # an interaction seen before the customer's profile: look again this often, this many times
    profile_wait_minutes: float = Field(default=1.0, gt=0)
    profile_wait_checks: int = Field(default=60, ge=0)


@dataclass
class AfterSalesFollowUp:
    config: FollowUpConfig = field(default_factory=FollowUpConfig)
    name: str = "followup"
    # ``followup_<trigger>`` to the customer, its ``_task`` variant to the owner
    templates: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: {
            f"followup_{trigger}{variant}": _DATA
            for trigger in ("order", "ticket")
            for variant in ("", "_task")
        }
    )

    def on_event(self, event: Event, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        interaction = event.payload
        if not isinstance(interaction, CustomerInteraction) or subject.customer is None:
            return
        closed_ticket = interaction.kind == "ticket" and interaction.ticket_status == "closed"
        trigger = (
            "order"
            if interaction.kind == "order" and self.config.after_orders
            else "ticket"
            if closed_ticket and self.config.after_closed_tickets
            else None
        )
        if trigger is None:
            return
        tier = subject.customer.tier or self.config.untiered
        step = self.config.by_tier.get(tier) or self.config.by_tier[self.config.untiered]
        tz = subject.timezone
        day = local_date(event.time, tz) + timedelta(days=step.after_days)
        due = at_local(day, self.config.local_time, tz)
        if due > self.config.plan_after(ctx.now):
            yield SetTimer(
                interaction.interaction_id,
                due,
                {
                    "interaction_id": interaction.interaction_id,
                    "trigger": trigger,
                    "kind": step.kind,
                    "tier": tier,
                },
            )

    def on_timer(self, timer: Timer, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        customer = subject.customer
        if customer is None:
            return
        waited = int(timer.data.get("waited", 0))
        if customer.profile_time is None and waited < self.config.profile_wait_checks:
            # the order came before the customer's profile (another upstream system, another
            # raw partition): look again shortly rather than follow up nobody
            yield SetTimer(
                timer.name,
                ctx.now + timedelta(minutes=self.config.profile_wait_minutes),
                {**timer.data, "waited": waited + 1},
            )
            return
        kind: ActionKind = timer.data["kind"]
        data = {
            "customer_id": customer.customer_id,
            "customer_name": customer.name,
            "interaction_id": timer.data["interaction_id"],
            "tier": timer.data["tier"],
        }
        template = f"followup_{timer.data['trigger']}"
        key = f"followup:{timer.data['interaction_id']}"
        if kind == "email" and customer.email is not None:
            yield Action.to_customer(
                self.name,
                subject,
                key,
                template=template,
                due_at=timer.due_at,
                data=data,
                purpose="follow_up",
            )
        elif customer.owner_id is not None:  # a task, or an e-mail we cannot send
            yield Action.task(
                self.name,
                subject,
                key,
                customer.owner_id,
                ctx,
                template=f"{template}_task",
                due_at=timer.due_at,
                data=data,
                purpose="follow_up",
            )
        else:  # no address to e-mail and no owner to ask
            yield Unrouted("no_recipient")


def settings_to_follow_up_at_once(now: datetime) -> dict[str, Any] | None:
    """rules.yaml settings under which every order is followed up by e-mail at the next tick
    (today, at a moment already past), for process tests and benchmarks on the real clock;
    ``None`` when ``now`` is too close to midnight UTC for a same-day follow-up."""
    if (now + timedelta(minutes=20)).date() != now.date():
        return None
    past = (now - timedelta(hours=1)).time() if now.hour >= 1 else time(0, 0)
    return {
        "local_time": past.replace(microsecond=0).isoformat(),
        "catch_up_hours": 23,
        "by_tier": {tier: {"after_days": 0, "kind": "email"} for tier in "ABC"},
    }
