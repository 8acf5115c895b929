"""Revisits on a cadence (定期回访, 分级管理): "an A-tier customer is touched at least every 30
days, B every 60, C every 120" — and the same for channels, by their own tiers.

A touch is what the configuration counts for the kind of subject (a visit, a call, an order, a
closed ticket, a completed task); the clock restarts at every one. When it runs out the cadence
says what happens: a revisit task for the owner (``task``), a check-in e-mail to the customer or
to the distributor itself (``email``; a distributor's is a statement of its last
``statement_days``), or nothing but the count (``none``). Until somebody touches the subject it
happens again every ``every_days``.

Every change of a subject's standing — it comes under a cadence, falls out of it, is touched
again, changes tier — is published as ``upkeep.revisit.status_changed.v1``, from which analytics
computes revisit compliance per tier and team. The timer is ``lapse``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.rules.calendar import at_local, local_date
from services.rules.sdk import (
    Action,
    CancelTimers,
    Decision,
    Emit,
    Event,
    RuleContext,
    SetTimer,
    TaskPriority,
    Timer,
    Unrouted,
)
from services.rules.state import ChannelState, CustomerState, SubjectState, Tier, TouchKind
from shared.events.types import (
    ChannelAssigned,
    ChannelInteraction,
    ChannelOrder,
    ChannelTierChanged,
    ChannelUpserted,
    CustomerAssigned,
    CustomerInteraction,
    CustomerTierChanged,
    CustomerUpserted,
    RevisitStatusChanged,
    TaskCompleted,
)

_TRIGGERS = (
    CustomerUpserted,
    CustomerInteraction,
    CustomerTierChanged,
    CustomerAssigned,
    ChannelUpserted,
    ChannelOrder,
    ChannelInteraction,
    ChannelTierChanged,
    ChannelAssigned,
    TaskCompleted,
)
_SUBJECT = frozenset({"subject_kind", "subject_id", "subject_name"})


class Cadence(BaseModel):
    model_config = ConfigDict(extra="forbid")

    every_days: int = Field(ge=1, le=3650)
    action: Literal["task", "email", "none"]


class Cadences(BaseModel):
    """The cadence of one kind of subject, by tier, and what counts as a touch of it."""

    model_config = ConfigDict(extra="forbid")

    by_tier: dict[Tier, Cadence]
    untiered: Tier | None = "C"  # which tier's cadence applies before a tier is known
    touches: list[TouchKind]


def _customers() -> Cadences:
    return Cadences(
        by_tier={
            "A": Cadence(every_days=30, action="task"),
            "B": Cadence(every_days=60, action="email"),
            "C": Cadence(every_days=120, action="email"),
        },
        touches=["visit", "call", "order", "ticket_closed", "task_completed"],
    )


def _channels() -> Cadences:
    return Cadences(
        by_tier={
            "A": Cadence(every_days=30, action="task"),
            "B": Cadence(every_days=30, action="email"),
            "C": Cadence(every_days=30, action="email"),
        },
        touches=["visit", "call", "meeting", "order", "task_completed"],
    )


class RevisitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    customers: Cadences = Field(default_factory=_customers)
    channels: Cadences = Field(default_factory=_channels)
    local_time: time = time(10, 0)
    task_due_days: float = Field(default=3, gt=0)
    task_priority: TaskPriority = "high"
    checkin_priority: Literal["transactional", "marketing"] = "marketing"  # customers' e-mail
    statement_days: int = Field(default=30, ge=1, le=365)


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a subject stands against its cadence at a moment."""

    tier: Tier
    cadence: Cadence
    last_touch: datetime | None
    due_day: date  # the local day the clock runs out (or ran out) ...
    due: datetime  # ... at the configured local time
    tz: str

    def within(self, now: datetime) -> bool:
        return now < self.due

    def status(self, now: datetime) -> str:
        return f"{self.tier}:{'in' if self.within(now) else 'out'}"


@dataclass
class Revisit:
    config: RevisitConfig = field(default_factory=RevisitConfig)
    name: str = "revisit"
    templates: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: {
            "revisit_task": _SUBJECT
            | {"tier", "every_days", "last_touch_date", "days_since_touch"},
            "revisit_checkin": frozenset({"customer_name", "days_since_touch"}),
            "channel_checkin": frozenset(
                {
                    "channel_id",
                    "channel_name",
                    "period_start",
                    "period_end",
                    "orders",
                    "order_value",
                    "last_order_date",
                    "tier",
                }
            ),
        }
    )

    def on_event(self, event: Event, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        if not isinstance(event.payload, _TRIGGERS):
            return
        standing = self._standing(subject, ctx.now)
        if standing is None:
            yield CancelTimers("lapse")
            return
        changed = standing.status(ctx.now) != _status_of(subject)
        if changed:
            yield self._status(subject, standing, ctx)
        if standing.within(ctx.now):
            yield SetTimer("lapse", standing.due)
        elif changed or isinstance(event.payload, CustomerAssigned | ChannelAssigned):
            yield SetTimer("lapse", ctx.now)  # it just fell out, or has a new owner: act now
        else:  # out already, and not touched: the next repeat
            yield SetTimer("lapse", self._next_repeat(standing, ctx.now))

    def on_timer(self, timer: Timer, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        standing = self._standing(subject, ctx.now)
        if standing is None:
            return
        if standing.within(ctx.now):  # touched since: the clock was restarted
            yield SetTimer("lapse", standing.due)
            return
        if standing.status(ctx.now) != _status_of(subject):
            yield self._status(subject, standing, ctx)
        yield from self._act(subject, standing, timer.due_at, ctx)
        yield SetTimer("lapse", self._next_repeat(standing, ctx.now))

    def _next_repeat(self, standing: Standing, now: datetime) -> datetime:
        """The first moment after ``now`` a whole number of cadences after the due day, at the
        local time (the same wall-clock time across a change of daylight saving time)."""
        every = standing.cadence.every_days
        periods = max((local_date(now, standing.tz) - standing.due_day).days // every, 0) + 1
        while True:
            day = standing.due_day + timedelta(days=periods * every)
            moment = at_local(day, self.config.local_time, standing.tz)
            if moment > now:
                return moment
            periods += 1

    # -- where a subject stands --------------------------------------------------------------

    def _standing(self, subject: SubjectState, now: datetime) -> Standing | None:
        part = subject.maintained
        if part is None or (isinstance(part, ChannelState) and not part.active):
            return None
        cadences = self.config.customers if subject.customer else self.config.channels
        tier = part.tier or cadences.untiered
        cadence = cadences.by_tier.get(tier) if tier else None
        if tier is None or cadence is None:
            return None
        last = part.last_touch(cadences.touches)
        first = part.first_seen if isinstance(part, CustomerState) else part.profile_time
        start = last or first or part.assigned_at or now
        tz = subject.timezone
        day = local_date(start, tz) + timedelta(days=cadence.every_days)
        return Standing(tier, cadence, last, day, at_local(day, self.config.local_time, tz), tz)

    def _status(self, subject: SubjectState, standing: Standing, ctx: RuleContext) -> Emit:
        owner = subject.owner_id
        member = ctx.staff.get(owner) if owner else None
        return Emit(
            RevisitStatusChanged.type_name,
            {
                "about": subject.id,
                "in_cadence": standing.within(ctx.now),
                "tier": standing.tier,
                "every_days": standing.cadence.every_days,
                "owner_id": owner,
                "team": member.team if member else None,
                "last_touch_at": standing.last_touch.isoformat() if standing.last_touch else None,
                "changed_at": ctx.now.isoformat(),
            },
        )

    # -- what happens when the clock runs out ------------------------------------------------

    def _act(
        self, subject: SubjectState, standing: Standing, at: datetime, ctx: RuleContext
    ) -> Iterator[Decision]:
        part = subject.maintained
        assert part is not None
        key = f"{self.name}:{subject.id}:{local_date(at, subject.timezone)}"
        last = standing.last_touch
        since = (ctx.now - last).days if last else None
        action = standing.cadence.action
        if action == "task":
            if subject.owner_id is None:
                yield Unrouted("no_owner")
                return
            yield Action.task(
                self.name,
                subject,
                f"{key}:{subject.owner_id}",  # a new owner gets their own
                subject.owner_id,
                ctx,
                template="revisit_task",
                due_at=at,
                task_due=at + timedelta(days=self.config.task_due_days),
                priority=self.config.task_priority,
                purpose="revisit",
                data={
                    "subject_kind": subject.kind,
                    "subject_id": subject.id.split(":", 1)[1],
                    "subject_name": part.name or None,
                    "tier": standing.tier,
                    "every_days": standing.cadence.every_days,
                    "last_touch_date": local_date(last, subject.timezone).isoformat()
                    if last
                    else None,
                    "days_since_touch": since,
                },
            )
        elif action == "email" and isinstance(part, CustomerState):
            if part.email is None:
                yield Unrouted("no_recipient")
                return
            yield Action.to_customer(
                self.name,
                subject,
                key,
                template="revisit_checkin",
                due_at=at,
                priority=self.config.checkin_priority,
                purpose="revisit",
                data={"customer_name": part.name or None, "days_since_touch": since},
            )
        elif action == "email" and isinstance(part, ChannelState):
            if part.email is None:
                yield Unrouted("no_recipient")
                return
            yield Action.to_channel(
                self.name,
                subject,
                key,
                template="channel_checkin",
                due_at=at,
                purpose="revisit",
                data=self._statement(part, at),
            )

    def _statement(self, channel: ChannelState, at: datetime) -> dict[str, Any]:
        end = local_date(at, channel.timezone) - timedelta(days=1)
        start = end - timedelta(days=self.config.statement_days - 1)
        days = [d for d in channel.daily_orders if start.isoformat() <= d <= end.isoformat()]
        value = sum((channel.daily_orders[d] for d in days), Decimal(0))
        last = channel.last_order_at
        return {
            "channel_id": channel.channel_id,
            "channel_name": channel.name or None,
            "period_start": start.isoformat(),
            "period_end": end.isoformat(),
            "orders": sum(channel.daily_order_count.get(d, 0) for d in days),
            "order_value": f"{value:.2f}",
            "last_order_date": local_date(last, channel.timezone).isoformat() if last else None,
            "tier": channel.tier,
        }


def _status_of(subject: SubjectState) -> str | None:
    part = subject.maintained
    return part.revisit_status if part is not None else None
