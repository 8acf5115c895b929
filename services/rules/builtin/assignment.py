"""Assignment: "every customer and channel has an owner" — the assign step of maintenance.

A customer or channel without an owner, or whose owner is no longer active, gets one: the first
territory in ``rules.yaml`` that matches it (its region, its channel, one of its tags) names a
team, and within the team the policy picks the member — ``least_loaded`` (fewest subjects owned
plus open tasks, then by id) or ``round_robin`` (the member after the one the team was last given
work to) — skipping inactive members, members away until a date still to come and members at
their capacity. A subject with no touch (visit, call, order, closed ticket, completed task) for
``reclaim_after_days`` goes back to its team's pool and is given to someone else, and its owner
is warned ``warn_days`` before (公海).

Each assignment is published as ``upkeep.customer.assigned.v1`` / ``upkeep.channel.assigned.v1``
(who, from whom, why): every rule sees the new owner from it, and upstream CRMs can follow it.
Its id comes from what decided it, so a redelivered event or a replayed topic decides nothing
twice, and the same history assigns the same owners.

Timers per owned subject: ``review`` (every ``review_every_days``: is the owner still active?),
``warn`` and ``reclaim`` (moved by every touch).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.rules.calendar import at_local, local_date
from services.rules.sdk import (
    Action,
    CancelTimers,
    Decision,
    Emit,
    Event,
    Roster,
    RuleContext,
    SetTimer,
    Timer,
    Unrouted,
)
from services.rules.state import (
    TOUCH_KINDS,
    ChannelState,
    CustomerState,
    StaffState,
    SubjectState,
    TouchKind,
)
from shared.events.types import (
    ChannelAssigned,
    ChannelInteraction,
    ChannelOrder,
    ChannelUpserted,
    CustomerAssigned,
    CustomerInteraction,
    CustomerUpserted,
    TaskCompleted,
)

SubjectKind = Literal["customer", "channel"]
SUBJECT_KINDS: tuple[SubjectKind, ...] = ("customer", "channel")
_SUBJECT = frozenset({"subject_kind", "subject_id", "subject_name"})
# the events that can change who should own a subject, or restart its reclaim clock
_TRIGGERS = (
    CustomerUpserted,
    CustomerInteraction,
    ChannelUpserted,
    ChannelOrder,
    ChannelInteraction,
    CustomerAssigned,
    ChannelAssigned,
    TaskCompleted,
)


class Territory(BaseModel):
    """Subjects that match every field given here belong to ``team``."""

    model_config = ConfigDict(extra="forbid")

    team: str = Field(min_length=1)
    region: str | None = None
    channel: str | None = None  # a customer's channel, or the channel itself
    tag: str | None = None  # a customer's tag

    @model_validator(mode="after")
    def _says_something(self) -> Territory:
        if self.region is None and self.channel is None and self.tag is None:
            raise ValueError("a territory needs a region, a channel or a tag")
        return self

    def matches(self, part: CustomerState | ChannelState) -> bool:
        if isinstance(part, CustomerState):
            region, channel, tags = part.region, part.channel_id, part.tags
        else:
            region, channel, tags = part.region, part.channel_id, []
        return (
            (self.region is None or self.region == region)
            and (self.channel is None or self.channel == channel)
            and (self.tag is None or self.tag in tags)
        )


class AssignmentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    policy: Literal["least_loaded", "round_robin"] = "least_loaded"
    territories: list[Territory] = Field(default_factory=list)
    default_team: str | None = None  # no territory matched; none: any member of staff
    subjects: list[SubjectKind] = Field(default_factory=lambda: list(SUBJECT_KINDS))
    reclaim_after_days: int = Field(default=0, ge=0)  # 0: never reclaim
    warn_days: int = Field(default=7, ge=0)
    touches: list[TouchKind] = Field(default_factory=lambda: list(TOUCH_KINDS))
    review_every_days: int = Field(default=1, ge=1)
    # nobody available for an unowned subject (its team's staff not known yet, all away): again
    retry_minutes: float = Field(default=30, gt=0)
    local_time: time = time(8, 0)
    notify_owner: bool = True  # tell the new owner (``assignment_notice``)

    @model_validator(mode="after")
    def _warn_before_reclaim(self) -> AssignmentConfig:
        if self.reclaim_after_days and self.warn_days >= self.reclaim_after_days:
            raise ValueError("warn_days must be less than reclaim_after_days")
        return self


def available(member: StaffState, today: date, roster: Roster) -> bool:
    """Whether a member of staff can be given a subject today."""
    away = member.away_until is not None and member.away_until >= today
    full = member.capacity is not None and roster.owned.get(member.staff_id, 0) >= member.capacity
    return member.active and not away and not full


@dataclass
class Assignment:
    config: AssignmentConfig = field(default_factory=AssignmentConfig)
    name: str = "assignment"
    uses_roster: bool = True  # the engine loads every member's load for it
    templates: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: {
            "assignment_notice": _SUBJECT | {"reason", "previous_owner_name", "team"},
            "assignment_reclaim_warning": _SUBJECT
            | {"days_without_touch", "reclaim_date", "last_touch_date"},
        }
    )

    def on_event(self, event: Event, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        if isinstance(event.payload, _TRIGGERS):
            yield from self._review(subject, ctx, event.id)

    def on_timer(self, timer: Timer, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        part = subject.maintained
        if part is None:
            return
        trigger = f"{timer.name}@{timer.due_at.isoformat()}"
        if timer.name == "warn":
            yield from self._warn(subject, part, timer, ctx)
        elif timer.name == "reclaim" and timer.data.get("owner") == subject.owner_id:
            yield from self._assign(subject, part, ctx, "reclaimed", trigger)
        else:
            yield from self._review(subject, ctx, trigger)

    # -- deciding ----------------------------------------------------------------------------

    def _review(self, subject: SubjectState, ctx: RuleContext, trigger: str) -> Iterator[Decision]:
        part = subject.maintained
        if part is None or subject.kind not in self.config.subjects:
            return
        if isinstance(part, ChannelState) and not part.active:
            yield CancelTimers("")
            return
        pending = ctx.roster.pending.get(subject.id)
        if pending is not None:
            if pending != subject.owner_id:
                return  # assigned a moment ago: the event saying so is on its way
            del ctx.roster.pending[subject.id]
        owner = ctx.staff.get(subject.owner_id) if subject.owner_id else None
        if subject.owner_id is None:
            yield from self._assign(subject, part, ctx, "unowned", trigger)
        elif owner is not None and not owner.active:
            yield from self._assign(subject, part, ctx, "owner_inactive", trigger)
        elif (reclaim := self._reclaim_at(subject, part, ctx)) is not None and reclaim <= ctx.now:
            yield from self._assign(subject, part, ctx, "reclaimed", trigger)
        else:  # an owner we do not know (yet) keeps the subject: the CRM knows them
            yield from self._plan(subject, part, subject.owner_id, ctx)

    def _assign(
        self,
        subject: SubjectState,
        part: CustomerState | ChannelState,
        ctx: RuleContext,
        reason: Literal["unowned", "owner_inactive", "reclaimed"],
        trigger: str,
    ) -> Iterator[Decision]:
        """``trigger`` (the event or timer occurrence that decided it) names the notice, so a
        redelivery does not tell the new owner twice."""
        team = self._team(part)
        previous = subject.owner_id
        chosen = self._choose(team, previous, subject.timezone, ctx)
        if chosen is None:
            yield Unrouted("no_staff")
            if previous is not None:
                yield from self._plan(subject, part, previous, ctx)  # look again tomorrow
            else:
                yield SetTimer("review", ctx.now + timedelta(minutes=self.config.retry_minutes))
            return
        ctx.roster.took(subject.id, team or "", chosen.staff_id, previous)
        data: dict[str, Any] = {
            "owner_id": chosen.staff_id,
            "previous_owner_id": previous,
            "team": team,
            "reason": reason,
            "assigned_at": ctx.now.isoformat(),
        }
        if isinstance(part, CustomerState):
            yield Emit(CustomerAssigned.type_name, {"customer_id": part.customer_id, **data})
        else:
            yield Emit(ChannelAssigned.type_name, {"channel_id": part.channel_id, **data})
        if self.config.notify_owner:
            old = ctx.roster.staff.get(previous) if previous else None
            yield Action.to_staff(
                self.name,
                subject,
                f"assignment:{subject.id}:{chosen.staff_id}:{trigger}",
                chosen.staff_id,
                ctx,
                template="assignment_notice",
                due_at=ctx.now,
                data={
                    **_about(subject, part),
                    "reason": reason,
                    "previous_owner_name": old.name if old else None,
                    "team": team,
                },
                purpose="assignment",
            )
        # the new owner's clock starts now (the assigned event moves the timers again)
        yield from self._plan(subject, part, chosen.staff_id, ctx, since=ctx.now)

    def _team(self, part: CustomerState | ChannelState) -> str | None:
        found = next((t.team for t in self.config.territories if t.matches(part)), None)
        return found or self.config.default_team

    def _choose(
        self, team: str | None, previous: str | None, tz: str, ctx: RuleContext
    ) -> StaffState | None:
        roster, today = ctx.roster, local_date(ctx.now, tz)
        members = (
            roster.team(team) if team else sorted(roster.staff.values(), key=lambda m: m.staff_id)
        )
        eligible = [m for m in members if m.staff_id != previous and available(m, today, roster)]
        if not eligible:
            return None
        if self.config.policy == "least_loaded":
            return min(eligible, key=lambda m: (roster.load(m.staff_id), m.staff_id))
        last = roster.last.get(team or "")
        if last is None:  # nobody given work yet (or since a restart): the least loaded first
            return min(eligible, key=lambda m: (roster.load(m.staff_id), m.staff_id))
        after = [m for m in eligible if m.staff_id > last]
        return after[0] if after else eligible[0]

    # -- the reclaim clock -------------------------------------------------------------------

    def _last_touch(self, part: CustomerState | ChannelState) -> datetime | None:
        return part.last_touch(self.config.touches)

    def _reclaim_at(
        self,
        subject: SubjectState,
        part: CustomerState | ChannelState,
        ctx: RuleContext,
        since: datetime | None = None,
    ) -> datetime | None:
        """When the subject goes back to the pool without a touch (``None``: never)."""
        cfg, tz = self.config, subject.timezone
        if not cfg.reclaim_after_days:
            return None
        first = part.first_seen if isinstance(part, CustomerState) else part.profile_time
        known = [t for t in (self._last_touch(part), part.assigned_at, since) if t is not None]
        start = max(known) if known else first or ctx.now  # the clock does not restart by itself
        day = local_date(start, tz) + timedelta(days=cfg.reclaim_after_days)
        return at_local(day, cfg.local_time, tz)

    def _plan(
        self,
        subject: SubjectState,
        part: CustomerState | ChannelState,
        owner: str,
        ctx: RuleContext,
        since: datetime | None = None,
    ) -> Iterator[Decision]:
        """The next review, and the warning and reclaim still to come (a moment passed is
        left to the review, which reclaims a subject whose clock ran out)."""
        cfg, tz = self.config, subject.timezone
        review = local_date(ctx.now, tz) + timedelta(days=cfg.review_every_days)
        yield SetTimer("review", at_local(review, cfg.local_time, tz))
        reclaim = self._reclaim_at(subject, part, ctx, since)
        if reclaim is None:
            return
        day = local_date(reclaim, tz)
        data = {"owner": owner, "reclaim_date": day.isoformat()}
        if reclaim > ctx.now:
            yield SetTimer("reclaim", reclaim, data)
        warn = at_local(day - timedelta(days=cfg.warn_days), cfg.local_time, tz)
        if cfg.warn_days and warn > ctx.now:
            yield SetTimer("warn", warn, data)

    def _warn(
        self,
        subject: SubjectState,
        part: CustomerState | ChannelState,
        timer: Timer,
        ctx: RuleContext,
    ) -> Iterator[Decision]:
        owner = subject.owner_id
        if owner is None or timer.data.get("owner") != owner:
            return  # reassigned since: the new owner's clock is planned anew
        last = self._last_touch(part)
        since = last or part.assigned_at
        yield Action.to_staff(
            self.name,
            subject,
            f"assignment:{subject.id}:warn:{timer.data['reclaim_date']}",
            owner,
            ctx,
            template="assignment_reclaim_warning",
            due_at=timer.due_at,
            data={
                **_about(subject, part),
                "days_without_touch": (ctx.now - since).days if since else None,
                "reclaim_date": timer.data["reclaim_date"],
                "last_touch_date": local_date(last, subject.timezone).isoformat() if last else None,
            },
            purpose="reclaim_warning",
        )


def _about(subject: SubjectState, part: CustomerState | ChannelState) -> dict[str, Any]:
    ident = part.customer_id if isinstance(part, CustomerState) else part.channel_id
    return {"subject_kind": subject.kind, "subject_id": ident, "subject_name": part.name or None}
