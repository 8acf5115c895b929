"""Payload models of every event type, and the one table that registers them.

A type name is ``upkeep.<entity>.<what>.v<N>``. A new version of a type is a new class and a new
row in :data:`EVENT_TYPES`; the old version stays so old producers keep working. Upstream systems
may also write the short name (``customer.upserted``), which resolves to the newest version.

Every event is about one *subject* — a customer, a channel or a staff member — and is keyed by it
on Kafka, so one rules replica sees all events of a subject in order. Contract events belong to
their customer.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, StringConstraints, model_validator

from shared.events.fields import (
    Currency,
    Email,
    Id,
    Locale,
    Money,
    Name,
    Phone,
    Text,
    TimeZoneName,
    UtcDatetime,
)

SubjectKind = Literal["customer", "channel", "staff"]


class EventPayload(BaseModel):
    """Base of all payloads. Unknown fields are refused so a typo never passes silently;
    free-form data belongs in ``attributes``."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=10_000)

    type_name: ClassVar[str]
    subject_kind: ClassVar[SubjectKind]
    subject_field: ClassVar[str]
    time_field: ClassVar[str | None] = None

    def subject(self) -> str:
        """The partition key and CloudEvents ``subject``: ``<kind>:<id>``."""
        return f"{self.subject_kind}:{getattr(self, self.subject_field)}"

    def event_time(self) -> datetime | None:
        """When the event happened, if the payload says so."""
        if self.time_field is None:
            return None
        value: datetime | None = getattr(self, self.time_field)
        return value


Attributes = dict[str, str | int | float | bool | None]


class CustomerUpserted(EventPayload):
    """A customer was created or changed in the CRM. Carries the whole profile."""

    type_name = "upkeep.customer.upserted.v1"
    subject_kind = "customer"
    subject_field = "customer_id"
    time_field = "updated_at"

    customer_id: Id
    name: Name
    timezone: TimeZoneName
    locale: Locale = "en"
    email: Email | None = None
    phone: Phone | None = None
    birthday: date | None = None
    customer_since: date | None = None
    owner_id: Id | None = None
    channel_id: Id | None = None
    region: Text | None = None  # the sales territory, for assigning an owner
    marketing_opt_in: bool = True
    updated_at: UtcDatetime | None = None
    tags: list[Text] = Field(default_factory=list, max_length=50)
    attributes: Attributes = Field(default_factory=dict, max_length=100)


class CustomerInteraction(EventPayload):
    """Something happened between the business and a customer: an order, visit, call or ticket."""

    type_name = "upkeep.customer.interaction.v1"
    subject_kind = "customer"
    subject_field = "customer_id"
    time_field = "occurred_at"

    interaction_id: Id
    customer_id: Id
    kind: Literal["order", "visit", "call", "ticket"]
    occurred_at: UtcDatetime
    amount: Money | None = None
    currency: Currency | None = None
    ticket_status: Literal["opened", "closed"] | None = None
    staff_id: Id | None = None
    channel_id: Id | None = None
    attributes: Attributes = Field(default_factory=dict, max_length=100)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.kind == "ticket" and self.ticket_status is None:
            raise ValueError("a ticket interaction needs ticket_status (opened or closed)")
        if self.kind != "ticket" and self.ticket_status is not None:
            raise ValueError("ticket_status is only for ticket interactions")
        if self.amount is not None and self.currency is None:
            raise ValueError("an amount needs a currency")
        return self


class ContractUpserted(EventPayload):
    """A contract was signed or changed."""

    type_name = "upkeep.contract.upserted.v1"
    subject_kind = "customer"
    subject_field = "customer_id"
    time_field = "updated_at"

    contract_id: Id
    customer_id: Id
    start_date: date
    end_date: date
    value: Money | None = None
    currency: Currency | None = None
    auto_renew: bool = False
    status: Literal["active", "pending", "expired"] = "active"
    owner_id: Id | None = None
    updated_at: UtcDatetime | None = None

    @model_validator(mode="after")
    def _dates_in_order(self) -> Self:
        if self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        if self.value is not None and self.currency is None:
            raise ValueError("a value needs a currency")
        return self


class ContractRenewed(EventPayload):
    """A contract was renewed until a new end date."""

    type_name = "upkeep.contract.renewed.v1"
    subject_kind = "customer"
    subject_field = "customer_id"
    time_field = "renewed_at"

    contract_id: Id
    customer_id: Id
    renewed_at: UtcDatetime
    new_end_date: date
    value: Money | None = None
    currency: Currency | None = None


class ContractCancelled(EventPayload):
    """A contract was cancelled (it will not be renewed)."""

    type_name = "upkeep.contract.cancelled.v1"
    subject_kind = "customer"
    subject_field = "customer_id"
    time_field = "cancelled_at"

    contract_id: Id
    customer_id: Id
    cancelled_at: UtcDatetime
    reason: Text | None = None


class ChannelUpserted(EventPayload):
    """A channel (distributor, reseller, partner) was created or changed."""

    type_name = "upkeep.channel.upserted.v1"
    subject_kind = "channel"
    subject_field = "channel_id"
    time_field = "updated_at"

    channel_id: Id
    name: Name
    timezone: TimeZoneName
    locale: Locale = "en"
    manager_id: Id | None = None
    region: Text | None = None
    email: Email | None = None
    phone: Phone | None = None
    active: bool = True
    updated_at: UtcDatetime | None = None
    attributes: Attributes = Field(default_factory=dict, max_length=100)


class ChannelOrder(EventPayload):
    """A channel ordered from us (``order``) or reported a sale to an end customer
    (``sell_through``)."""

    type_name = "upkeep.channel.order.v1"
    subject_kind = "channel"
    subject_field = "channel_id"
    time_field = "occurred_at"

    order_id: Id
    channel_id: Id
    kind: Literal["order", "sell_through"] = "order"
    occurred_at: UtcDatetime
    amount: Money
    currency: Currency
    units: int | None = Field(default=None, ge=0)
    customer_id: Id | None = None


class StaffUpserted(EventPayload):
    """A member of staff who owns customers or manages channels was created or changed."""

    type_name = "upkeep.staff.upserted.v1"
    subject_kind = "staff"
    subject_field = "staff_id"
    time_field = "updated_at"

    staff_id: Id
    name: Name
    timezone: TimeZoneName
    locale: Locale = "en"
    email: Email | None = None
    phone: Phone | None = None
    manager_id: Id | None = None
    chat_webhook_url: HttpUrl | None = None
    # which bot the URL belongs to, when its host does not tell (a proxy, a private deployment)
    chat_platform: Literal["dingtalk", "wecom", "feishu", "slack"] | None = None
    active: bool = True
    updated_at: UtcDatetime | None = None
    # for assigning owners: the team (and region) they belong to, when they are away (until
    # that local date, included), and how many subjects they may own at most
    team: Id | None = None
    region: Text | None = None
    away_until: date | None = None
    capacity: int | None = Field(default=None, ge=0, le=1_000_000)


class CustomerTierChanged(EventPayload):
    """Published by the rules service when a customer's RFM tier changes."""

    type_name = "upkeep.customer.tier_changed.v1"
    subject_kind = "customer"
    subject_field = "customer_id"
    time_field = "changed_at"

    customer_id: Id
    tier: Literal["A", "B", "C"]
    previous: Literal["A", "B", "C"] | None = None
    recency_score: int = Field(ge=1, le=3)
    frequency_score: int = Field(ge=1, le=3)
    monetary_score: int = Field(ge=1, le=3)
    changed_at: UtcDatetime


class ChannelTierChanged(EventPayload):
    """Published by the rules service when a channel's tier (by the value it sells over a
    window, and how that value grows) changes."""

    type_name = "upkeep.channel.tier_changed.v1"
    subject_kind = "channel"
    subject_field = "channel_id"
    time_field = "changed_at"

    channel_id: Id
    tier: Literal["A", "B", "C"]
    previous: Literal["A", "B", "C"] | None = None
    value: Money  # over the window, in the channel's currencies summed
    growth_percent: float | None = None  # against the window before it; None: nothing before
    changed_at: UtcDatetime


class CustomerChurnRiskChanged(EventPayload):
    """Published by the rules service when a customer enters or leaves the at-risk state."""

    type_name = "upkeep.customer.churn_risk_changed.v1"
    subject_kind = "customer"
    subject_field = "customer_id"
    time_field = "changed_at"

    customer_id: Id
    at_risk: bool
    risk: float = Field(ge=0, le=1)
    changed_at: UtcDatetime


class ChannelInteraction(EventPayload):
    """Someone from our side visited, called or met a channel (a touch for ``revisit``)."""

    type_name = "upkeep.channel.interaction.v1"
    subject_kind = "channel"
    subject_field = "channel_id"
    time_field = "occurred_at"

    channel_id: Id
    kind: Literal["visit", "call", "meeting"]
    occurred_at: UtcDatetime
    staff_id: Id | None = None
    note: Text | None = None


AssignReason = Literal["unowned", "owner_inactive", "reclaimed"]


class CustomerAssigned(EventPayload):
    """Published by the rules service (rule ``assignment``) when a customer gets an owner:
    who, from whom and why. Every rule sees the new owner from this event on."""

    type_name = "upkeep.customer.assigned.v1"
    subject_kind = "customer"
    subject_field = "customer_id"
    time_field = "assigned_at"

    customer_id: Id
    owner_id: Id
    previous_owner_id: Id | None = None
    team: Id | None = None
    reason: AssignReason
    assigned_at: UtcDatetime


class ChannelAssigned(EventPayload):
    """Published by the rules service (rule ``assignment``) when a channel gets a manager
    (its ``owner_id``): who, from whom and why."""

    type_name = "upkeep.channel.assigned.v1"
    subject_kind = "channel"
    subject_field = "channel_id"
    time_field = "assigned_at"

    channel_id: Id
    owner_id: Id
    previous_owner_id: Id | None = None
    team: Id | None = None
    reason: AssignReason
    assigned_at: UtcDatetime


_SUBJECT_REF = r"^(customer|channel):[A-Za-z0-9][A-Za-z0-9._:@/\-]*$"
SubjectRef = Annotated[str, StringConstraints(max_length=140, pattern=_SUBJECT_REF)]
"""A customer or channel by subject (``customer:C-1``, ``channel:CH-1``)."""
TaskId = Annotated[str, StringConstraints(min_length=1, max_length=300, pattern=r"^\S+$")]
TaskPriority = Literal["low", "normal", "high", "urgent"]


class _AboutSubject(EventPayload):
    """An event about a task or a revisit of a customer or a channel: keyed by that subject
    (``about``), so it is ordered with the subject's other events."""

    subject_kind = "customer"  # not used: the subject is ``about``
    subject_field = "about"

    about: SubjectRef

    def subject(self) -> str:
        return self.about


class TaskCreated(_AboutSubject):
    """Published by the rules service for every action of kind ``task`` it decides: the task's
    id is the action's key."""

    type_name = "upkeep.task.created.v1"
    time_field = "created_at"

    task_id: TaskId
    owner_id: Id
    team: Id | None = None  # the owner's team when the task was made
    rule: Id
    purpose: Id | None = None
    title: Text | None = None
    priority: TaskPriority = "normal"
    due_at: UtcDatetime
    created_at: UtcDatetime


class TaskCompleted(_AboutSubject):
    """A task was done (over the notifier's API): a touch of its subject."""

    type_name = "upkeep.task.completed.v1"
    time_field = "completed_at"

    task_id: TaskId
    completed_by: Id | None = None
    completed_at: UtcDatetime
    note: Text | None = None


class TaskSnoozed(_AboutSubject):
    """A task was put off to a new due time."""

    type_name = "upkeep.task.snoozed.v1"
    time_field = "snoozed_at"

    task_id: TaskId
    due_at: UtcDatetime
    snoozed_by: Id | None = None
    snoozed_at: UtcDatetime


class TaskReassigned(_AboutSubject):
    """A task was given to another member of staff."""

    type_name = "upkeep.task.reassigned.v1"
    time_field = "reassigned_at"

    task_id: TaskId
    owner_id: Id
    previous_owner_id: Id | None = None
    reassigned_by: Id | None = None
    reassigned_at: UtcDatetime


class TaskOverdue(_AboutSubject):
    """Published by the rules service (rule ``task-escalation``) when an open task's due time
    passes."""

    type_name = "upkeep.task.overdue.v1"
    time_field = "overdue_at"

    task_id: TaskId
    owner_id: Id
    due_at: UtcDatetime
    overdue_at: UtcDatetime


class TaskEscalated(_AboutSubject):
    """Published by the rules service (rule ``task-escalation``) when an overdue task is taken
    one level up the manager chain (level 1: the owner's manager)."""

    type_name = "upkeep.task.escalated.v1"
    time_field = "escalated_at"

    task_id: TaskId
    owner_id: Id
    level: int = Field(ge=1, le=20)
    escalated_to: Id
    escalated_at: UtcDatetime


class RevisitStatusChanged(_AboutSubject):
    """Published by the rules service (rule ``revisit``) when a subject comes under a revisit
    cadence, falls out of it (no touch within ``every_days``) or is touched again."""

    type_name = "upkeep.revisit.status_changed.v1"
    time_field = "changed_at"

    in_cadence: bool
    tier: Literal["A", "B", "C"]
    every_days: int = Field(ge=1, le=3650)
    owner_id: Id | None = None
    team: Id | None = None
    last_touch_at: UtcDatetime | None = None
    changed_at: UtcDatetime


JourneyName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")
]
"""A journey's name (``distributor-onboarding``): lower case, digits and hyphens."""
StepId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
]
RunId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]
StepKind = Literal["send", "wait", "wait_for", "branch", "set", "emit", "exit"]
StepOutcome = Literal[
    "sent", "unrouted", "waited", "event", "timeout", "then", "else", "set", "emitted", "exited"
]
LeaveReason = Literal["completed", "converted", "exited", "disabled", "ended_by_update"]


class _JourneyRun(_AboutSubject):
    """Published by the rules service about one run of a journey (an operator-defined flow,
    ``docs/journeys.md``) for one subject: what analytics counts its funnel from."""

    journey: JourneyName
    version: int = Field(ge=1)
    run: RunId


class JourneyEntered(_JourneyRun):
    """A subject entered a journey (``trigger``: the event type, ``date:<field>`` or
    ``segment``)."""

    type_name = "upkeep.journey.entered.v1"
    time_field = "entered_at"

    trigger: Text
    entered_at: UtcDatetime


class JourneyStepCompleted(_JourneyRun):
    """A run finished one step (``next_step``: where it is now; ``None``: it is leaving).
    A send names the action it published (``action_key``)."""

    type_name = "upkeep.journey.step_completed.v1"
    time_field = "completed_at"

    step: StepId
    kind: StepKind
    outcome: StepOutcome
    next_step: StepId | None = None
    action_key: TaskId | None = None
    completed_at: UtcDatetime


class JourneyLeft(_JourneyRun):
    """A run ended: it went through every step (``completed``), met the goal (``converted``),
    met an exit condition or an exit step (``exited``), its journey was switched off
    (``disabled``) or changed so that its step no longer exists (``ended_by_update``)."""

    type_name = "upkeep.journey.left.v1"
    time_field = "left_at"

    reason: LeaveReason
    last_step: StepId | None = None  # the step it took last or was waiting in (None: none yet)
    left_at: UtcDatetime


class SubjectLabelled(_AboutSubject):
    """Tags added to or removed from a customer or channel, or attributes set on it (by a
    journey's ``set`` step, or by an upstream system). They live beside the profile's own
    tags and attributes: a profile update does not undo them."""

    type_name = "upkeep.subject.labelled.v1"
    time_field = "labelled_at"

    add_tags: list[Text] = Field(default_factory=list, max_length=50)
    remove_tags: list[Text] = Field(default_factory=list, max_length=50)
    attributes: Attributes = Field(default_factory=dict, max_length=100)
    labelled_by: Text | None = None
    labelled_at: UtcDatetime


CostCategory = Literal["travel", "gift", "rebate", "event", "staff_time", "other"]
Hours = Annotated[Decimal, Field(gt=0, le=10_000, max_digits=7, decimal_places=2)]
MAX_COST = Decimal(1_000_000_000_000)  # in minor units it still fits MongoDB's 64-bit integer


class CostRecorded(_AboutSubject):
    """What maintaining a customer or channel cost: a visit's travel, a gift, a rebate, an
    event, or staff hours at a rate (``staff_time`` with ``hours`` and ``hourly_rate``, whose
    product is the amount). ``incurred_on`` is the local date it counts on; ``cost_id`` makes
    the entry once, however often it is sent."""

    type_name = "upkeep.cost.recorded.v1"
    time_field = "recorded_at"

    cost_id: Id
    category: CostCategory
    amount: Money | None = None
    hours: Hours | None = None
    hourly_rate: Money | None = None
    currency: Currency
    incurred_on: date
    staff_id: Id | None = None  # who spent it (the subject's owner is whose cost it is)
    note: Text | None = None
    recorded_at: UtcDatetime

    @model_validator(mode="after")
    def _amount_or_hours(self) -> Self:
        timed = self.hours is not None or self.hourly_rate is not None
        if timed and (self.hours is None or self.hourly_rate is None):
            raise ValueError("staff hours need both hours and hourly_rate")
        if timed and self.category != "staff_time":
            raise ValueError("hours and hourly_rate are only for category staff_time")
        if timed and self.amount is not None and self.amount != self.total():
            raise ValueError("amount is not hours x hourly_rate")
        if not timed and self.amount is None:
            raise ValueError("a cost needs an amount (or hours and hourly_rate for staff_time)")
        if self.total() > MAX_COST:
            raise ValueError(f"a cost above {MAX_COST:,} is not a maintenance cost")
        return self

    def total(self) -> Decimal:
        """The amount, or hours x rate."""
        if self.hours is not None and self.hourly_rate is not None:
            return self.hours * self.hourly_rate
        assert self.amount is not None
        return self.amount


BudgetScope = Literal["channel", "owner", "team"]
BudgetPeriod = Literal["month", "quarter", "year"]
_YEAR = r"(19\d\d|2\d\d\d)"  # 1900-2999: a budget's period stays inside the calendar
_PERIOD = {
    "month": rf"^{_YEAR}-(0[1-9]|1[0-2])$",
    "quarter": rf"^{_YEAR}-Q[1-4]$",
    "year": rf"^{_YEAR}$",
}


class BudgetSet(EventPayload):
    """A maintenance budget for a channel, an owner (a member of staff) or a team, for one month
    (``2026-12``), quarter (``2026-Q4``) or year (``2026``), cut in analytics' reporting time
    zone (the days its figures are counted in). Setting the same
    ``budget_id`` again replaces it (the latest ``set_at`` wins); amount 0 switches it off.
    Keyed ``budget:<budget_id>``. Only costs in its currency count against it, unless analytics
    has a rate table."""

    type_name = "upkeep.budget.set.v1"
    subject_kind = "customer"  # not used: the subject is budget:<budget_id>
    subject_field = "budget_id"
    time_field = "set_at"

    budget_id: Id
    name: Name | None = None
    scope: BudgetScope
    scope_id: Id
    period: BudgetPeriod
    period_id: str = Field(max_length=7, description="2026-12, 2026-Q4 or 2026")
    amount: Money
    currency: Currency
    owner_id: Id | None = None  # who answers for it (default: the channel's owner, the owner)
    set_at: UtcDatetime

    @model_validator(mode="after")
    def _period_id(self) -> Self:
        if not re.fullmatch(_PERIOD[self.period], self.period_id):
            raise ValueError(f"period_id {self.period_id!r} is not a {self.period}")
        if self.scope == "team" and self.owner_id is None:
            raise ValueError("a team budget needs owner_id (who answers for it)")
        return self

    def subject(self) -> str:
        return f"budget:{self.budget_id}"


EVENT_TYPES: dict[str, type[EventPayload]] = {
    model.type_name: model
    for model in (
        CustomerUpserted,
        CustomerInteraction,
        ContractUpserted,
        ContractRenewed,
        ContractCancelled,
        ChannelUpserted,
        ChannelOrder,
        StaffUpserted,
        CustomerTierChanged,
        CustomerChurnRiskChanged,
        ChannelTierChanged,
        ChannelInteraction,
        CustomerAssigned,
        ChannelAssigned,
        TaskCreated,
        TaskCompleted,
        TaskSnoozed,
        TaskReassigned,
        TaskOverdue,
        TaskEscalated,
        RevisitStatusChanged,
        JourneyEntered,
        JourneyStepCompleted,
        JourneyLeft,
        SubjectLabelled,
        CostRecorded,
        BudgetSet,
    )
}
"""Every event type Upkeep accepts, by full versioned name. Add new types here."""


def _short_name(type_name: str) -> str:
    return type_name.removeprefix("upkeep.").rsplit(".v", 1)[0]


_ALIASES: dict[str, str] = {}
for _name in sorted(EVENT_TYPES, key=lambda n: int(n.rsplit(".v", 1)[1])):
    _ALIASES[_short_name(_name)] = _name  # the newest version wins
    _ALIASES[_name.removeprefix("upkeep.")] = _name


def resolve_type(name: str) -> type[EventPayload] | None:
    """The payload model for a full or short type name, or ``None`` if it is unknown."""
    if name in EVENT_TYPES:
        return EVENT_TYPES[name]
    full = _ALIASES.get(name)
    return EVENT_TYPES[full] if full else None
