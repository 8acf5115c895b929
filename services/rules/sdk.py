"""The contract of a maintenance rule.

A rule is a small object with no I/O. The engine calls it when an event about a subject arrives
(after the subject's state has been updated) and when one of the rule's timers fires; it answers
with *decisions*: actions to send, timers to set, timers to cancel. Everything a rule needs is in
its arguments — the event or timer, the subject's state, and a :class:`RuleContext` with the
clock, the rule's configuration and the staff who own the subject.

Worked example — "call the customer a week after their first order" (``docs/rules.md`` runs
it as a test)::

    @dataclass
    class FirstOrderCall:
        name: str = "first-order-call"
        templates: Mapping[str, frozenset[str]] = field(
            default_factory=lambda: {"first_order_call": frozenset({"customer_name"})}
        )

        def on_event(self, event, subject, ctx):
            match event.payload:
                case CustomerInteraction(kind="order") if subject.customer.orders == 1:
                    yield SetTimer("call", event.time + timedelta(days=7))

        def on_timer(self, timer, subject, ctx):
            if (owner := subject.owner_id) is not None:
                yield Action.task(self.name, subject, f"{self.name}:{subject.id}", owner, ctx,
                                  template="first_order_call", due_at=timer.due_at,
                                  data={"customer_name": subject.customer.name})

Identity rules: a timer is identified by (rule, subject, name) — setting it again moves it;
an action's ``key`` identifies the occurrence it is about (``renewal:contract-42:2027-01-31:30d``),
so replaying history yields the same keys and the notifier sends each occurrence once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, Protocol, runtime_checkable

from services.rules.state import StaffState, SubjectState
from shared.events.envelope import CanonicalEvent
from shared.events.types import EventPayload, TaskCreated

ActionKind = Literal["email", "chat", "webhook", "task"]
Priority = Literal["transactional", "marketing"]
TaskPriority = Literal["low", "normal", "high", "urgent"]
DEFAULT_TASK_DUE = timedelta(days=2)  # a task whose rule names no due time


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """When a task is due (its action's ``due_at`` is when it is created) and how urgent it
    is. The engine publishes ``upkeep.task.created.v1`` for it, which ``task-escalation``
    chases."""

    due_at: datetime
    priority: TaskPriority = "normal"


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who an action is for: a customer, a channel or a member of staff, by id."""

    kind: Literal["customer", "channel", "staff"]
    id: str


@dataclass(frozen=True, slots=True)
class Action:
    """Something to deliver. ``key`` is deterministic per occurrence (see module doc). Build it
    with :meth:`to_staff`, :meth:`task` or :meth:`to_customer`, which read like the sentence."""

    key: str
    rule: str
    subject: str
    kind: ActionKind
    recipient: Recipient
    template: str
    locale: str
    due_at: datetime
    priority: Priority = "transactional"
    data: Mapping[str, Any] = field(default_factory=dict)
    # for reporting: what maintenance it does (``follow_up``, ``renewal_reminder``,
    # ``channel_alert`` …) and the contract term (contract id, end date) it is about
    purpose: str | None = None
    term: tuple[str, date] | None = None
    task_spec: TaskSpec | None = None  # kind task only: when it is due, how urgent

    @classmethod
    def to_staff(
        cls,
        rule: str,
        subject: SubjectState,
        key: str,
        staff_id: str,
        ctx: RuleContext,
        *,
        template: str,
        due_at: datetime,
        kind: ActionKind = "email",
        data: Mapping[str, Any] | None = None,
        purpose: str | None = None,
        term: tuple[str, date] | None = None,
        task_spec: TaskSpec | None = None,
    ) -> Action:
        """A message to a member of staff (an owner, a manager), in their own language; of
        kind ``task``, a task due ``task_spec.due_at`` (:data:`DEFAULT_TASK_DUE` after ``due_at``
        when not given)."""
        member = ctx.staff.get(staff_id)
        if kind == "task" and task_spec is None:
            task_spec = TaskSpec(due_at + DEFAULT_TASK_DUE)
        return cls(
            key=key,
            rule=rule,
            subject=subject.id,
            kind=kind,
            recipient=Recipient("staff", staff_id),
            template=template,
            locale=member.locale if member else "en",
            due_at=due_at,
            data=dict(data or {}),
            purpose=purpose,
            term=term,
            task_spec=task_spec if kind == "task" else None,
        )

    @classmethod
    def task(
        cls,
        rule: str,
        subject: SubjectState,
        key: str,
        owner: str,
        ctx: RuleContext,
        *,
        template: str,
        due_at: datetime,
        data: Mapping[str, Any] | None = None,
        purpose: str | None = None,
        task_due: datetime | None = None,
        priority: TaskPriority = "normal",
    ) -> Action:
        """A task for a member of staff (a call to make, a visit to pay), created at
        ``due_at`` and due at ``task_due`` (:data:`DEFAULT_TASK_DUE` later when not given)."""
        return cls.to_staff(
            rule,
            subject,
            key,
            owner,
            ctx,
            template=template,
            due_at=due_at,
            kind="task",
            data=data,
            purpose=purpose,
            task_spec=TaskSpec(task_due or due_at + DEFAULT_TASK_DUE, priority),
        )

    @classmethod
    def to_customer(
        cls,
        rule: str,
        subject: SubjectState,
        key: str,
        *,
        template: str,
        due_at: datetime,
        kind: ActionKind = "email",
        priority: Priority = "transactional",
        data: Mapping[str, Any] | None = None,
        purpose: str | None = None,
        term: tuple[str, date] | None = None,
    ) -> Action:
        """A message to the subject's customer, in the customer's language. Raises
        ``ValueError`` for a subject that is not a known customer."""
        customer = subject.customer
        if customer is None:
            raise ValueError(f"{subject.id} is not a known customer")
        return cls(
            key=key,
            rule=rule,
            subject=subject.id,
            kind=kind,
            recipient=Recipient("customer", customer.customer_id),
            template=template,
            locale=customer.locale,
            due_at=due_at,
            priority=priority,
            data=dict(data or {}),
            purpose=purpose,
            term=term,
        )

    @classmethod
    def to_channel(
        cls,
        rule: str,
        subject: SubjectState,
        key: str,
        *,
        template: str,
        due_at: datetime,
        data: Mapping[str, Any] | None = None,
        purpose: str | None = None,
    ) -> Action:
        """An e-mail to the channel (the distributor's own contact from ``channel.upserted``),
        in its language. Raises ``ValueError`` for a subject that is not a known channel."""
        channel = subject.channel
        if channel is None:
            raise ValueError(f"{subject.id} is not a known channel")
        return cls(
            key=key,
            rule=rule,
            subject=subject.id,
            kind="email",
            recipient=Recipient("channel", channel.channel_id),
            template=template,
            locale=channel.locale,
            due_at=due_at,
            data=dict(data or {}),
            purpose=purpose,
        )


@dataclass(frozen=True, slots=True)
class Event:
    """An event as a rule sees it: its typed payload (match on its class, read its fields),
    the moment it happened, its type and its identity."""

    payload: EventPayload
    time: datetime
    type: str
    id: str  # the event's de-duplication key: the same for every copy of it
    # a copy of an event the state had applied already (a redelivery, a replay): rules that
    # keep their own records in the state (journeys) decide nothing new from it
    repeat: bool = False

    @classmethod
    def of(cls, event: CanonicalEvent, payload: EventPayload, *, repeat: bool = False) -> Event:
        return cls(
            payload=payload, time=event.time, type=event.type, id=event.dedup_key, repeat=repeat
        )


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Wake this rule for this subject at ``due_at`` (UTC). Same name again: moved."""

    name: str
    due_at: datetime
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CancelTimers:
    """Cancel this rule's pending timers for this subject whose name starts with ``prefix``."""

    prefix: str


@dataclass(frozen=True, slots=True)
class Emit:
    """Publish a derived event about the subject (e.g. a tier change) for other consumers."""

    type: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Unrouted:
    """Work the rule would have done but has nobody to send it to (no owner, no manager, no
    address): never silent, the engine counts it as ``upkeep_rules_unrouted_total{rule,reason}``."""

    reason: str  # e.g. ``no_owner``, ``no_manager``, ``no_recipient``


Decision = Action | SetTimer | CancelTimers | Emit | Unrouted


@dataclass(frozen=True, slots=True)
class Timer:
    """A timer that fired, as handed back to the rule that set it."""

    rule: str
    subject: str
    name: str
    due_at: datetime
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return timer_id(self.rule, self.subject, self.name)


def timer_id(rule: str, subject: str, name: str) -> str:
    return f"{rule}|{subject}|{name}"


@dataclass(frozen=True, slots=True)
class Schedule:
    """A job a rule runs on the calendar rather than per subject (e.g. every Monday at 01:00
    UTC, a list for each owner of their customers at risk). The engine runs it once per slot, on
    one replica, with the subjects of ``kind`` whose state matches ``where`` (dotted paths into
    the state, equality: ``{"customer.at_risk": True}``), and publishes the actions it returns
    in the tick's transaction — exactly once per slot, like a timer occurrence."""

    name: str
    hour_utc: int
    kind: Literal["customer", "channel", "staff"]
    where: Mapping[str, Any] = field(default_factory=dict)
    weekday: int | None = None  # 0 is Monday; None: every day

    def slot(self, now: datetime) -> datetime:
        """The most recent scheduled moment at or before ``now`` (UTC)."""
        moment = now.astimezone(UTC).replace(hour=self.hour_utc, minute=0, second=0, microsecond=0)
        if self.weekday is None:
            return moment if moment <= now else moment - timedelta(days=1)
        moment -= timedelta(days=(moment.weekday() - self.weekday) % 7)
        return moment if moment <= now else moment - timedelta(days=7)


@dataclass
class Roster:
    """Every member of staff and what each carries — subjects owned and open tasks — for rules
    that hand out work (``assignment``). The engine's snapshot (refreshed every few minutes);
    :meth:`took` counts an assignment into it at once, so the next subject in the same batch
    sees the new load, and remembers it as ``pending`` until the assigned event is applied (an
    event of the same subject in between must not assign it again). ``last`` is the member
    each team was last given work to (round-robin). Both live as long as the process. A rule
    that reads the loads says so with ``uses_roster = True``: without one, the engine makes no
    pass over the subjects and the roster holds only the staff it has seen in events."""

    staff: dict[str, StaffState] = field(default_factory=dict)
    owned: dict[str, int] = field(default_factory=dict)
    open_tasks: dict[str, int] = field(default_factory=dict)
    last: dict[str, str] = field(default_factory=dict)  # team -> staff id
    # subject -> the owner it was just given, until that assignment comes back as an event
    pending: dict[str, str] = field(default_factory=dict)

    def load(self, staff_id: str) -> int:
        return self.owned.get(staff_id, 0) + self.open_tasks.get(staff_id, 0)

    def team(self, name: str) -> list[StaffState]:
        return sorted((m for m in self.staff.values() if m.team == name), key=lambda m: m.staff_id)

    def took(self, subject: str, team: str, staff_id: str, previous: str | None) -> None:
        self.pending[subject] = staff_id
        self.owned[staff_id] = self.owned.get(staff_id, 0) + 1
        if previous is not None and self.owned.get(previous, 0) > 0:
            self.owned[previous] -= 1
        self.last[team] = staff_id


@dataclass(frozen=True, slots=True)
class RuleContext:
    """What a rule may know besides the subject: the time, its settings, the staff directory
    entries the engine loaded for this subject (its owner or manager and their managers, and
    the owners of its open tasks and their managers) and the :class:`Roster` of all staff."""

    now: datetime
    config: Mapping[str, Any] = field(default_factory=dict)
    staff: Mapping[str, StaffState] = field(default_factory=dict)
    roster: Roster = field(default_factory=Roster)

    def manager_of(self, staff_id: str | None) -> str | None:
        member = self.staff.get(staff_id) if staff_id else None
        return member.manager_id if member else None


@runtime_checkable
class Rule(Protocol):
    """What the engine calls. ``name`` is stable: it appears in metrics, timer ids, action keys
    and ``rules.yaml``. ``templates`` names every template its actions use, with the keys of
    the ``data`` each receives: the rules service refuses to start when one is missing from
    the template store, and the template tests are generated from it."""

    name: str
    templates: Mapping[str, frozenset[str]]

    def on_event(self, event: Event, subject: SubjectState, ctx: RuleContext) -> Iterable[Decision]:
        """Called for every event about a subject, after its state was updated."""
        ...

    def on_timer(self, timer: Timer, subject: SubjectState, ctx: RuleContext) -> Iterable[Decision]:
        """Called when a timer this rule set for this subject is due."""
        ...


@runtime_checkable
class ScheduledRule(Rule, Protocol):
    """A rule that also runs jobs on the calendar (:class:`Schedule`)."""

    @property
    def schedules(self) -> Sequence[Schedule]: ...

    def on_schedule(
        self, job: Schedule, slot: datetime, subjects: Sequence[SubjectState], ctx: RuleContext
    ) -> Iterable[Action]:
        """Called once per slot of ``job`` with the subjects it asked for; ``ctx.now`` is the
        slot. Only actions are taken from it."""
        ...


@dataclass
class Outcome:
    """What one rule decided for one subject, ready to be stored and published."""

    rule: str = ""
    subject: str = ""
    set_timers: list[Timer] = field(default_factory=list)
    cancel_prefixes: list[str] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    emits: list[Emit] = field(default_factory=list)
    unrouted: list[str] = field(default_factory=list)  # the reasons, one per skipped piece


def apply_decisions(rule: str, subject: str, decisions: Iterable[Decision]) -> Outcome:
    """Sort a rule's decisions by kind, keeping their order (a cancel before a set of the same
    timer leaves the new timer in place)."""
    outcome = Outcome(rule=rule, subject=subject)
    for decision in decisions:
        if isinstance(decision, SetTimer):
            outcome.set_timers.append(
                Timer(rule, subject, decision.name, decision.due_at, dict(decision.data))
            )
        elif isinstance(decision, CancelTimers):
            outcome.cancel_prefixes.append(decision.prefix)
            outcome.set_timers = [
                t for t in outcome.set_timers if not t.name.startswith(decision.prefix)
            ]
        elif isinstance(decision, Action):
            outcome.actions.append(decision)
        elif isinstance(decision, Unrouted):
            outcome.unrouted.append(decision.reason)
        else:
            outcome.emits.append(decision)
    return outcome


def task_created(action: Action, team: str | None) -> TaskCreated | None:
    """The ``upkeep.task.created.v1`` a task action makes (``None`` for other actions): the
    engine publishes it with the action, and ``task-escalation`` chases the task from it."""
    if action.kind != "task" or action.task_spec is None:
        return None
    if not action.subject.startswith(("customer:", "channel:")):
        return None  # a scheduled job's task (about no one subject) is stored, not chased
    return TaskCreated(
        about=action.subject,
        task_id=action.key,
        owner_id=action.recipient.id,
        team=team,
        rule=action.rule,
        purpose=action.purpose,
        priority=action.task_spec.priority,
        due_at=action.task_spec.due_at,
        created_at=action.due_at,
    )
