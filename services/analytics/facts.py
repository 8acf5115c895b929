"""What each record on the three topics counts for: pure functions, no I/O.

A :class:`Fact` has an identity (the same occurrence always has the same one, whichever record
carries it), the moment it happened, the counters it adds and the subject it is about. Counters
are integers: money is counted in minor units per currency (``order_value.EUR`` in cents).

* ``upkeep.events.v1`` — events by type; orders and order value; new customers; renewals
  renewed and lost; customers at risk and recovered; tier changes; assignments by reason and
  reassignments; tasks created, completed, snoozed, reassigned, overdue and escalated (by level);
  journeys' runs entered and left (by reason, per version) and their steps completed (by
  outcome), counted in the buckets of their journey only (``scope``).
* ``upkeep.actions.v1`` — actions by rule and kind; renewals due (one per contract term named
  by an action's ``term``); channels flagged (``purpose`` ``channel_alert``).
* ``upkeep.deliveries.v1`` — final outcomes by kind and rule; automated and manual touches;
  follow-ups done (``purpose`` ``follow_up``); contract terms reminded (``term``).

Records written before actions carried ``purpose`` and ``term`` are read by
:mod:`services.analytics.legacy`.

A record may also be a :class:`Touch` of a contract term (a reminder sent, a renewal), from
which :mod:`services.analytics.conversions` finds reminders followed by a renewal, and a task or
revisit event that changes a read model of :mod:`services.analytics.people`, or a journey's event
that moves a run of :mod:`services.analytics.journeys`.

A task's facts are about ``task:<id>``: the handler attributes them to the task's owner and team
as the tasks read model knows them (a completion does not say whose task it was).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

import orjson
from pydantic import ValidationError

from services.analytics import legacy
from services.analytics.journeys import (
    JOURNEY_EVENTS,
    JourneyEvent,
    entry_counters,
    leave_counters,
    step_counters,
)
from services.analytics.money import activity_parts, cents, cost_fact_parts
from services.analytics.people import TASK_EVENTS, Revisit, TaskEvent
from shared.events.actions import ActionMessage, ContractTerm
from shared.events.deliveries import DeliveryMessage
from shared.events.envelope import CanonicalEvent
from shared.events.types import (
    BudgetSet,
    ChannelAssigned,
    ChannelOrder,
    ChannelUpserted,
    ContractCancelled,
    ContractRenewed,
    CostRecorded,
    CustomerAssigned,
    CustomerChurnRiskChanged,
    CustomerInteraction,
    CustomerTierChanged,
    CustomerUpserted,
    EventPayload,
    JourneyEntered,
    JourneyStepCompleted,
    RevisitStatusChanged,
    StaffUpserted,
    TaskCompleted,
    TaskCreated,
    TaskOverdue,
    TaskReassigned,
    TaskSnoozed,
)

FINAL = ("sent", "suppressed", "failed")
CONTEXT = ("owner", "channel", "tier", "team")  # what an action's context may attribute it by
FOLLOW_UP, CHANNEL_ALERT = "follow_up", "channel_alert"  # purposes counted on their own
# analytics' own messages to staff (reports, budget alerts): delivered, but no one's touch
TO_STAFF = ("report", "budget_alert")


# Identities that *distinct* records claim — the same customer upserted again, a term reminded
# or renewed again, every touch of a contract deriving its conversions anew — so their claim is
# what keeps them counted once for as long as such a record may come: it never expires. There is
# one per customer, contract or term, not per event. Every other identity is one occurrence that
# only copies of its own record carry; its claim expires after the replay horizon.
LASTING_CLAIMS = ("new-customer:", "lost:", "renewed:", "due:renewal:", "reminded:", "converted:")


def claim_expires(identity: str) -> bool:
    return not identity.startswith(LASTING_CLAIMS)


@dataclass(frozen=True, slots=True)
class Fact:
    identity: str
    at: datetime
    counters: dict[str, int]
    subject: str | None = None  # whose owner, channel and tier the fact is attributed to
    dims: dict[str, str] = field(default_factory=dict)  # known from the record itself
    # the one dimension whose buckets count the fact (None: overall and every dimension it is
    # attributed by); a scoped fact is also kept in an all-time bucket of its value
    scope: str | None = None


@dataclass(frozen=True, slots=True)
class Touch:
    """A contract term reminded (``end`` is the term's end) or renewed (``end`` is the new end)."""

    kind: str  # "reminded" | "renewed"
    contract: str
    end: date
    at: datetime
    subject: str


def purpose_of(message: ActionMessage | DeliveryMessage) -> str | None:
    """What maintenance an action (or its outcome) did; older records by their rule."""
    return message.purpose if message.purpose is not None else legacy.purpose_of(message.rule)


def term_of(message: ActionMessage | DeliveryMessage) -> ContractTerm | None:
    """The contract term an action (or its outcome) is about; older records by their key."""
    if message.purpose is not None:
        return message.term
    return legacy.term_of(message.rule, message.key)


class Unreadable(ValueError):
    """The record is not a valid message of its topic (it is dead-lettered)."""


def event_facts(event: CanonicalEvent, payload: EventPayload, tz: str = "UTC") -> list[Fact]:
    """``tz``: the reporting time zone (the day a cost was incurred on, the period a customer
    was active in)."""
    short = event.type.removeprefix("upkeep.").removesuffix(".v1")
    subject = event.subject
    facts = [Fact(f"event:{event.dedup_key}", event.time, {f"events.{short}": 1}, subject)]

    def add(name: str, counters: dict[str, int], **dims: str) -> None:
        facts.append(Fact(name, event.time, counters, subject, dims))

    if isinstance(payload, CustomerInteraction):
        for identity, counters in activity_parts(payload, event.time, tz):
            add(identity, counters)
    if isinstance(payload, CustomerUpserted):
        add(f"new-customer:{payload.customer_id}", {"customers.new": 1})
    elif isinstance(payload, CustomerInteraction) and payload.kind == "order":
        counters = {"orders": 1}
        if payload.amount is not None and payload.currency:
            counters[f"order_value.{payload.currency}"] = cents(payload.amount)
            counters[f"revenue.{payload.currency}"] = cents(payload.amount)
        add(f"order:customer:{payload.interaction_id}", counters)
    elif isinstance(payload, ChannelOrder) and payload.kind == "order":
        counters = {
            "channel_orders": 1,
            f"channel_order_value.{payload.currency}": cents(payload.amount),
            f"revenue.{payload.currency}": cents(payload.amount),
        }
        add(f"order:channel:{payload.order_id}", counters, channel=payload.channel_id)
    elif isinstance(payload, ChannelOrder):
        counters = {
            "sell_through": 1,
            f"sell_through_value.{payload.currency}": cents(payload.amount),
        }
        add(f"sell-through:{payload.order_id}", counters, channel=payload.channel_id)
    elif isinstance(payload, CostRecorded):
        identity, at, counters = cost_fact_parts(payload, tz)
        facts.append(Fact(identity, at, counters, subject))
    elif isinstance(payload, ContractRenewed):
        add(f"renewed:{payload.contract_id}:{payload.new_end_date}", {"renewals.renewed": 1})
    elif isinstance(payload, ContractCancelled):
        add(f"lost:{payload.contract_id}", {"renewals.lost": 1})
    elif isinstance(payload, CustomerChurnRiskChanged):
        name = "customers.at_risk" if payload.at_risk else "customers.recovered"
        add(f"risk:{event.dedup_key}", {name: 1})
    elif isinstance(payload, CustomerTierChanged):
        add(f"tier:{event.dedup_key}", {f"tiers.{payload.tier}": 1}, tier=payload.tier)
    elif isinstance(payload, CustomerAssigned | ChannelAssigned):
        counters = {"assignments": 1, f"assignments.{payload.reason}": 1}
        if payload.previous_owner_id:
            counters["assignments.reassigned"] = 1
        dims = {"owner": payload.owner_id, "team": payload.team or ""}
        add(f"assigned:{event.dedup_key}", counters, **{k: v for k, v in dims.items() if v})
    else:
        facts += task_facts(event, payload)
        facts += journey_facts(event, payload)
    return facts


def task_facts(event: CanonicalEvent, payload: EventPayload) -> list[Fact]:
    """One per task created, completed, and overdue per due time; one per escalation level;
    one per snooze and reassignment (each its own occurrence)."""
    if not isinstance(payload, TASK_EVENTS):
        return []
    task = f"task:{payload.task_id}"
    if isinstance(payload, TaskCreated):
        dims = {"owner": payload.owner_id, "team": payload.team or "", "rule": payload.rule}
        identity, counters = f"task-created:{payload.task_id}", {"tasks.created": 1}
    elif isinstance(payload, TaskCompleted):
        dims, identity = {}, f"task-completed:{payload.task_id}"
        counters = {"tasks.completed": 1}
    elif isinstance(payload, TaskSnoozed):
        dims, identity = {}, f"task-snoozed:{event.dedup_key}"
        counters = {"tasks.snoozed": 1}
    elif isinstance(payload, TaskReassigned):
        dims, identity = {"owner": payload.owner_id}, f"task-reassigned:{event.dedup_key}"
        counters = {"tasks.reassigned": 1}
    elif isinstance(payload, TaskOverdue):
        dims = {"owner": payload.owner_id}
        identity = f"task-overdue:{payload.task_id}:{payload.due_at.isoformat()}"
        counters = {"tasks.overdue": 1}
    else:
        dims = {"owner": payload.owner_id}
        identity = f"task-escalated:{payload.task_id}:{payload.level}"
        counters = {"tasks.escalated": 1, f"tasks.escalated.level_{payload.level}": 1}
    return [Fact(identity, event.time, counters, task, {k: v for k, v in dims.items() if v})]


def journey_identity(event: CanonicalEvent) -> str:
    return f"journey:{event.dedup_key}"


def journey_facts(event: CanonicalEvent, payload: EventPayload) -> list[Fact]:
    """One per journey event (by its id): a run entered, a step completed, a run left. Counted
    in the buckets of dimension ``journey`` (the journey's name) and nowhere else: a step's
    counters mean something only within its journey."""
    if not isinstance(payload, JOURNEY_EVENTS):
        return []
    if isinstance(payload, JourneyEntered):
        counters = entry_counters(payload.version)
    elif isinstance(payload, JourneyStepCompleted):
        counters = step_counters(payload.step, payload.outcome)
    else:
        counters = leave_counters(payload.version, payload.reason)
    dims = {"journey": payload.journey}
    return [Fact(journey_identity(event), event.time, counters, None, dims, scope="journey")]


def action_facts(action: ActionMessage) -> list[Fact]:
    # the action's context (owner, channel, tier when rules decided it) wins over what
    # analytics knows of the subject: profile events on another topic may not be read yet
    context = _context(action.context)
    dims = {**context, "rule": action.rule, "kind": action.kind}
    subject = action.subject
    facts = [
        Fact(
            f"action:{action.key}",
            action.due_at,
            {"actions": 1, f"actions.{action.kind}": 1},
            subject,
            dims,
        )
    ]
    term = term_of(action)
    if term is not None:
        identity = f"due:renewal:{term.contract_id}:{term.end_date}"
        facts.append(Fact(identity, action.due_at, {"renewals.due": 1}, subject, context))
    if purpose_of(action) == CHANNEL_ALERT:
        facts.append(
            Fact(f"flagged:{action.key}", action.due_at, {"channels.flagged": 1}, subject, dims)
        )
    return facts


def delivery_facts(delivery: DeliveryMessage) -> list[Fact]:
    if delivery.outcome not in FINAL:
        return []  # deferrals are steps on the way, not outcomes
    context = _context(delivery.context)
    dims = {**context, "rule": delivery.rule, "kind": delivery.kind}
    counters = {"deliveries": 1, f"deliveries.{delivery.outcome}": 1}
    if delivery.outcome == "sent" and purpose_of(delivery) not in TO_STAFF:
        automated = delivery.kind != "task"
        counters["touches.automated" if automated else "touches.manual"] = 1
        counters[f"touches.{delivery.kind}"] = 1
        if purpose_of(delivery) == FOLLOW_UP:
            counters["followups.done"] = 1
    facts = [Fact(f"delivery:{delivery.key}", delivery.at, counters, delivery.subject, dims)]
    term = reminded_term(delivery)
    if term is not None:
        identity = f"reminded:{term.contract}:{term.end}"
        reminded = {"renewals.reminded": 1}
        facts.append(Fact(identity, delivery.at, reminded, delivery.subject, context))
    return facts


def _context(context: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in context.items() if k in CONTEXT and v}


def reminded_term(delivery: DeliveryMessage) -> Touch | None:
    """A renewal reminder that reached someone: the term it reminded of."""
    term = term_of(delivery) if delivery.outcome == "sent" else None
    if term is None:
        return None
    return Touch("reminded", term.contract_id, term.end_date, delivery.at, delivery.subject)


def attribution_of(payload: EventPayload) -> tuple[str, dict[str, str]] | None:
    """What a profile event says about whom its subject belongs to."""
    if isinstance(payload, CustomerUpserted):
        dims = {"owner": payload.owner_id or "", "channel": payload.channel_id or ""}
        return f"customer:{payload.customer_id}", {k: v for k, v in dims.items() if v}
    if isinstance(payload, ChannelUpserted):
        dims = {"channel": payload.channel_id, "owner": payload.manager_id or ""}
        return f"channel:{payload.channel_id}", {k: v for k, v in dims.items() if v}
    if isinstance(payload, CustomerTierChanged):
        return f"customer:{payload.customer_id}", {"tier": payload.tier}
    if isinstance(payload, CustomerChurnRiskChanged):
        flag = "yes" if payload.at_risk else "no"
        return f"customer:{payload.customer_id}", {"at_risk": flag, "risk": f"{payload.risk:.2f}"}
    if isinstance(payload, CustomerAssigned | ChannelAssigned):
        return payload.subject(), {"owner": payload.owner_id}
    return None


@dataclass(frozen=True, slots=True)
class Read:
    facts: list[Fact]
    attribution: tuple[str, dict[str, str]] | None = None
    touch: Touch | None = None
    task: TaskEvent | None = None
    revisit: Revisit | None = None
    journey: tuple[JourneyEvent, str] | None = None  # and the identity of its fact
    budget: BudgetSet | None = None
    staff: tuple[StaffUpserted, datetime] | None = None  # a profile and its time


def read(topic_kind: str, value: bytes | None, tz: str = "UTC") -> Read:
    """The facts of one record (and, for a profile event, its attribution); raises
    :class:`Unreadable` for a record that is not a valid message of its topic."""
    try:
        if topic_kind == "events":
            event = CanonicalEvent.from_json(value or b"")
            payload = event.payload()
            touch = None
            if isinstance(payload, ContractRenewed):
                touch = Touch(
                    "renewed",
                    payload.contract_id,
                    payload.new_end_date,
                    payload.renewed_at,
                    event.subject,
                )
            task = payload if isinstance(payload, TASK_EVENTS) else None
            revisit = None
            if isinstance(payload, RevisitStatusChanged):
                revisit = Revisit.of(payload, event.dedup_key)
            facts = event_facts(event, payload, tz)
            journey = None
            if isinstance(payload, JOURNEY_EVENTS):
                journey = (payload, journey_identity(event))
            budget = payload if isinstance(payload, BudgetSet) else None
            staff = (payload, event.time) if isinstance(payload, StaffUpserted) else None
            return Read(
                facts, attribution_of(payload), touch, task, revisit, journey, budget, staff
            )
        if topic_kind == "actions":
            return Read(action_facts(ActionMessage.model_validate_json(value or b"")))
        delivery = DeliveryMessage.model_validate_json(value or b"")
        return Read(delivery_facts(delivery), touch=reminded_term(delivery))
    except (ValidationError, ValueError, KeyError, orjson.JSONDecodeError) as exc:
        raise Unreadable(str(exc)[:500]) from exc
