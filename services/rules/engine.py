"""The rules engine: events and due timers in, state, timers and actions out.

Per batch of canonical events: load the subjects, apply each event to its subject's state,
ask every rule, store the state and the timer changes, and hand the actions to the consumer
loop, which publishes them in the batch's Kafka transaction. State is stored before the commit
so a redelivered batch sees it; rules are asked again for a redelivered event (their decisions
are idempotent: timers by id, actions by key).

Per tick: fire the timers that are due in the partitions this replica owns. The tick's actions
and a tick-log entry naming the fired timers are committed in one transaction, then the timers
are removed; a replica that takes over a partition first removes whatever the last committed
entry names (:mod:`services.rules.ticklog`), so a crash between commit and removal neither
loses nor repeats a timer.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from services.rules.sdk import (
    Action,
    Decision,
    Event,
    Outcome,
    Roster,
    Rule,
    RuleContext,
    ScheduledRule,
    Timer,
    apply_decisions,
    task_created,
)
from services.rules.state import StaffState, SubjectState, apply
from services.rules.store import PlacedTimer, SubjectStore, TimerChanges, TimerStore
from services.rules.ticklog import TickLog, job_key, tick_entries
from shared.events.actions import ActionMessage, ActionRecipient, ContractTerm, TaskSpec
from shared.events.envelope import CanonicalEvent
from shared.events.types import EventPayload, resolve_type
from shared.kafka.messages import DeadLetter, HandlerResult, Outgoing, Record, canonical_message
from shared.metrics import preinit

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]


SCHEDULE_PARTITION = 0  # the owner of this events partition runs the scheduled jobs
MANAGER_CHAIN = 6  # how many levels of managers above an owner a rule may see
EMIT_SOURCE = "urn:upkeep:rules"
EMIT_NAMESPACE = uuid.UUID("0f8a3c55-3d5e-4a9e-9a35-7c4b0e6c2b11")

DECISIONS = Counter(
    "upkeep_rules_actions_total",
    "Actions decided, by rule and trigger (event, timer, schedule).",
    ["rule", "trigger"],
)
RULE_ERRORS = Counter(
    "upkeep_rules_errors_total",
    "Rule calls that raised (the rule is skipped for that input).",
    ["rule"],
)
UNROUTED = Counter(
    "upkeep_rules_unrouted_total",
    "Work a rule skipped because it had nobody to send it to, by rule and reason.",
    ["rule", "reason"],
)
UNROUTED_REASONS = ("no_owner", "no_manager", "no_recipient", "no_staff")
TIMERS_FIRED = Counter("upkeep_rules_timers_fired_total", "Timers fired, by rule.", ["rule"])
UNSETTLED = Counter(
    "upkeep_rules_unsettled_partitions_total",
    "Newly owned partitions a tick skipped because their last transaction was undecided.",
)
OVERDUE = Gauge(
    "upkeep_rules_overdue_timer_seconds",
    "How late the oldest due timer was when this replica's last tick took it (0: none due).",
)
LAST_TICK = Gauge(
    "upkeep_rules_last_tick_timestamp_seconds",
    "Unix time of this replica's last tick that looked for due timers (process start before).",
)
LAST_TICK.set_to_current_time()  # a replica that never ticks shows how long since it started
EVENTS_APPLIED = Counter(
    "upkeep_rules_events_total",
    "Canonical events handled, by outcome (applied, repeat).",
    ["outcome"],
)


def _count_later(result: HandlerResult, metric: Counter, *labels: str) -> None:
    """Count only what commits: a batch that is rolled back and retried is counted once."""
    result.after_commit.append(lambda: metric.labels(*labels).inc())


def _not_counted(result: HandlerResult, metric: Counter, *labels: str) -> None:
    """An engine that only rehearses (a dry run inside the service) counts nothing."""


def reporting_context(state: SubjectState) -> dict[str, str]:
    """Whom a subject belongs to now (owner, channel, tier), carried on its actions so that
    analytics attributes them as they were when decided."""
    customer, channel = state.customer, state.channel
    found = {
        "owner": state.owner_id,
        "channel": customer.channel_id if customer else channel.channel_id if channel else None,
        "tier": customer.tier if customer else None,
    }
    return {k: str(v) for k, v in found.items() if v}


def utc_now() -> datetime:
    return datetime.now(UTC)


class RulesEngine:
    def __init__(
        self,
        rules: Sequence[Rule],
        subjects: SubjectStore,
        timers: TimerStore,
        *,
        events_topic: str,
        actions_topic: str,
        config: Mapping[str, Mapping[str, Any]] | None = None,
        clock: Clock = utc_now,
        timers_per_tick: int = 1000,
        ticklog: TickLog | None = None,
        roster_refresh_s: float = 300.0,
        observed: bool = True,
    ) -> None:
        """``observed=False``: a rehearsal (a journey's dry run in the service) that must not
        move the service's own metrics."""
        self.rules = {rule.name: rule for rule in rules}
        self._observed = observed
        self._count = _count_later if observed else _not_counted
        self._subjects = subjects
        self._timers = timers
        self._events_topic = events_topic
        self._actions_topic = actions_topic
        self._config = config or {}
        self._clock = clock
        self._timers_per_tick = timers_per_tick
        self._jobs = [
            (rule, job)
            for rule in rules
            if isinstance(rule, ScheduledRule)
            for job in rule.schedules
        ]
        self._jobs_done: dict[str, datetime] = {}  # the last slot published, by job
        self._ticklog = ticklog
        self._settled: set[int] = set()  # owned partitions reconciled with the tick log
        self._roster: Roster | None = None
        self._roster_at = 0.0
        self._roster_refresh_s = roster_refresh_s
        # rules that keep records in the subject's state (journeys): it is saved after ticks too
        self._stateful = {rule.name for rule in rules if getattr(rule, "keeps_state", False)}
        for name in self.rules:
            preinit(DECISIONS, [(name, "event"), (name, "timer"), (name, "schedule")])
            preinit(RULE_ERRORS, [(name,)])
            preinit(UNROUTED, [(name, reason) for reason in UNROUTED_REASONS])
            preinit(TIMERS_FIRED, [(name,)])

    # -- events ------------------------------------------------------------------------------

    async def handle(self, records: Sequence[Record]) -> HandlerResult:
        result = HandlerResult()
        events: list[tuple[Record, CanonicalEvent, EventPayload]] = []
        for record in records:
            try:
                event = CanonicalEvent.from_json(record.value or b"")
                payload = event.payload()
            except (ValidationError, ValueError) as exc:
                result.dead_letters.append(DeadLetter(record, "invalid_event", str(exc)[:500]))
                continue
            except KeyError:
                result.dead_letters.append(DeadLetter(record, "unknown_type", "no such type"))
                continue
            events.append((record, event, payload))
        states = await self._subjects.load({e.subject for _, e, _ in events})
        staff = await self._staff_for(states.values())
        roster = await self._current_roster()
        changes, dirty, now = TimerChanges(), {}, self._clock()
        for record, event, payload in events:
            state = states.get(event.subject) or SubjectState(id=event.subject)
            position = (record.partition, record.offset)
            state, changed = apply(state, event, payload, position, in_place=True)
            states[event.subject] = state
            if changed:  # a repeat changes nothing: no write
                dirty[event.subject] = state
            self._count(result, EVENTS_APPLIED, "applied" if changed else "repeat")
            if state.staff is not None:  # seen at once, not at the next roster refresh
                staff[state.staff.staff_id] = roster.staff[state.staff.staff_id] = state.staff
            incoming = Event.of(event, payload, repeat=not changed)
            for rule in self.rules.values():
                config = self._config.get(rule.name, {})
                ctx = RuleContext(now=now, config=config, staff=staff, roster=roster)
                outcome = self._ask(rule, event.subject, rule.on_event, incoming, state, ctx)
                self._collect(
                    outcome,
                    state,
                    record.partition,
                    changes,
                    result,
                    "event",
                    now,
                    staff,
                    trigger=event.dedup_key,
                )
        await self._subjects.save(dirty.values())
        await self._timers.apply(changes)
        result.tick_soon = any(p.timer.due_at <= now for p in changes.sets)
        return result

    # -- timers ------------------------------------------------------------------------------

    @property
    def tick_topic(self) -> str:
        return self._events_topic

    async def tick(self, partitions: set[int]) -> HandlerResult:
        result = HandlerResult()
        owned = await self._settle(partitions)
        now = self._clock()
        ran: dict[str, datetime] = {}
        if self._jobs and SCHEDULE_PARTITION in owned:
            ran = await self._run_schedules(now, result)
        due = await self._timers.due(owned, self.rules.keys(), now, self._timers_per_tick)
        if self._observed:  # earliest first
            OVERDUE.set((now - due[0].timer.due_at).total_seconds() if due else 0)
        states = await self._subjects.load({p.timer.subject for p in due})
        staff = await self._staff_for(states.values())
        roster = await self._current_roster() if due else Roster()
        changes, fired = TimerChanges(), list[tuple[int, Timer]]()
        touched: dict[str, SubjectState] = {}
        for placed in due:
            timer, rule = placed.timer, self.rules.get(placed.timer.rule)
            if rule is None:  # due() returns only our rules; a race with a config reload
                continue
            state = states.setdefault(timer.subject, SubjectState(id=timer.subject))
            config = self._config.get(rule.name, {})
            ctx = RuleContext(now=timer.due_at, config=config, staff=staff, roster=roster)
            outcome = self._ask(rule, timer.subject, rule.on_timer, timer, state, ctx)
            self._collect(
                outcome,
                state,
                placed.partition,
                changes,
                result,
                "timer",
                now,
                staff,
                trigger=f"{timer.id}@{timer.due_at.isoformat()}",
            )
            fired.append((placed.partition, timer))
            if rule.name in self._stateful:
                touched[timer.subject] = state
            self._count(result, TIMERS_FIRED, rule.name)
        await self._subjects.save(touched.values())  # before the commit, as for events
        await self._timers.apply(changes)
        if self._ticklog is not None:
            for entry in tick_entries(
                fired, SCHEDULE_PARTITION, {**self._jobs_done, **ran}, scheduled_ran=bool(ran)
            ):
                result.messages.append(self._ticklog.entry(entry))

        async def forget() -> None:
            await self._timers.remove_fired([timer for _, timer in fired])

        if fired:
            result.after_commit.append(forget)
        if self._observed:
            LAST_TICK.set(now.timestamp())
        result.tick_soon = len(due) >= self._timers_per_tick  # stopped at its limit
        return result

    def revoked(self, partitions: set[int]) -> None:
        """Another replica may fire timers here before we own them again: reconcile then."""
        self._settled -= partitions

    async def _settle(self, owned: set[int]) -> set[int]:
        """The owned partitions that are reconciled with the tick log: for a newly owned one,
        remove the timers its last committed tick fired (they may have outlived a crash)."""
        if self._ticklog is None:
            return owned
        new = owned - self._settled
        if new:
            entries = await self._ticklog.last(new)
            if len(entries) < len(new):
                UNSETTLED.inc(len(new) - len(entries))
            for partition, entry in entries.items():
                if entry is not None:
                    await self._timers.remove_fired(entry.timers())
                    if partition == SCHEDULE_PARTITION:
                        for job, slot in entry.slots().items():
                            self._jobs_done[job] = max(self._jobs_done.get(job, slot), slot)
                self._settled.add(partition)
        return owned & self._settled

    async def _run_schedules(self, now: datetime, result: HandlerResult) -> dict[str, datetime]:
        """The owner of partition 0 runs each rule's scheduled jobs once per slot; returns the
        slots it published this time, by job."""
        ran: dict[str, datetime] = {}
        for rule, job in self._jobs:
            key, slot = job_key(rule.name, job.name), job.slot(now)
            last = self._jobs_done.get(key)
            if last is not None and last >= slot:
                continue
            subjects = await self._subjects.find(job.kind, job.where)
            ctx = RuleContext(now=slot, config=self._config.get(rule.name, {}))
            outcome = self._ask(rule, f"schedule:{key}", rule.on_schedule, job, slot, subjects, ctx)
            for action in outcome.actions:
                self._count(result, DECISIONS, action.rule, "schedule")
                result.messages += self._action_messages(action, now, {}, {})
            ran[key] = slot

        def done() -> None:
            self._jobs_done.update(ran)

        if ran:
            result.after_commit.append(done)
        return ran

    # -- helpers -----------------------------------------------------------------------------

    def _ask(
        self, rule: Rule, subject: str, call: Callable[..., Iterable[Decision]], *args: Any
    ) -> Outcome:
        """Ask one rule; a rule that raises is counted and skipped, never blocks the others."""
        try:
            return apply_decisions(rule.name, subject, call(*args))
        except Exception:
            RULE_ERRORS.labels(rule.name).inc()
            log.exception("rule failed", extra={"rule": rule.name, "subject": subject})
            return Outcome()

    def _collect(
        self,
        outcome: Outcome,
        state: SubjectState,
        partition: int,
        changes: TimerChanges,
        result: HandlerResult,
        kind: str,
        now: datetime,
        staff: Mapping[str, StaffState],
        *,
        trigger: str,
    ) -> None:
        """Add one rule's decisions to the batch. ``trigger`` (event or timer occurrence) makes
        the ids of emitted events deterministic, so a redelivery re-emits the same event."""
        context = reporting_context(state)
        changes.cancels += [(outcome.rule, outcome.subject, p) for p in outcome.cancel_prefixes]
        changes.sets += [PlacedTimer(t, partition) for t in outcome.set_timers]
        for action in outcome.actions:
            self._count(result, DECISIONS, action.rule, kind)
            result.messages += self._action_messages(action, now, context, staff)
        for reason in outcome.unrouted:
            self._count(result, UNROUTED, outcome.rule, reason)
        committed = (
            getattr(self.rules.get(outcome.rule), "committed", None) if self._observed else None
        )
        seen: dict[str, int] = {}
        for emit in outcome.emits:
            model = resolve_type(emit.type)
            if model is None:
                log.error("rule emitted an unknown event type", extra={"type": emit.type})
                continue
            payload = model.model_validate(dict(emit.data))
            # the n-th event of a type one decision emits (n > 0) has its own identity
            n = seen[emit.type] = seen.get(emit.type, -1) + 1
            identity = f"{outcome.rule}|{trigger}|{emit.type}" + (f"|{n}" if n else "")
            result.messages.append(self._derived(payload, identity, now))
            if committed is not None:  # the rule counts what it emitted, once committed
                result.after_commit.append(partial(committed, emit))

    def _derived(self, payload: EventPayload, identity: str, now: datetime) -> Outgoing:
        """A derived event for the events topic; its id is a function of ``identity`` (what
        decided it), so deciding it again re-emits the same event, which state ignores."""
        event = CanonicalEvent.build(
            event_id=str(uuid.uuid5(EMIT_NAMESPACE, identity)),
            source=EMIT_SOURCE,
            payload=payload,
            time=payload.event_time() or now,
            source_offset="Z",
        )
        return canonical_message(self._events_topic, event)

    def _action_messages(
        self,
        action: Action,
        now: datetime,
        context: Mapping[str, str],
        staff: Mapping[str, StaffState],
    ) -> list[Outgoing]:
        """The action for the actions topic — and for a task, ``upkeep.task.created.v1`` on
        the events topic (identified by the action's key), which ``task-escalation`` chases."""
        spec, messages = None, []
        owner = staff.get(action.recipient.id) or (
            self._roster.staff.get(action.recipient.id) if self._roster else None
        )
        created = task_created(action, owner.team if owner else None)
        if created is not None:
            spec = TaskSpec(due_at=created.due_at, priority=created.priority, team=created.team)
            messages.append(self._derived(created, f"task|{action.key}", now))
        message = ActionMessage(
            key=action.key,
            rule=action.rule,
            subject=action.subject,
            kind=action.kind,
            recipient=ActionRecipient(kind=action.recipient.kind, id=action.recipient.id),
            template=action.template,
            locale=action.locale,
            due_at=action.due_at,
            priority=action.priority,
            data=dict(action.data),
            context=dict(context),
            purpose=action.purpose,
            term=ContractTerm(contract_id=action.term[0], end_date=action.term[1])
            if action.term is not None
            else None,
            task=spec,
            created_at=now,
        )
        encoded = message.model_dump_json().encode()
        return [Outgoing(self._actions_topic, encoded, action.subject.encode()), *messages]

    async def _current_roster(self) -> Roster:
        """All staff and their loads, read again every ``roster_refresh_s``; in between, the
        assignments this replica makes are counted into it (``Roster.took``)."""
        # the loads need a pass over every subject: only while some rule reads them (journeys
        # do while one of them sends to a team)
        uses = any(getattr(rule, "uses_roster", False) for rule in self.rules.values())
        if not uses:  # no pass: only the staff this replica has seen in events
            self._roster = self._roster or Roster()
            return self._roster
        stale = time.monotonic() - self._roster_at > self._roster_refresh_s
        if self._roster is None or stale:
            self._roster = await self._subjects.roster()
            self._roster_at = time.monotonic()
        return self._roster

    async def _staff_for(self, states: Iterable[SubjectState]) -> dict[str, StaffState]:
        """The owners of these subjects, of their contracts and open tasks, and their managers
        up to :data:`MANAGER_CHAIN` levels (one lookup per level)."""
        found: dict[str, StaffState] = {}
        states = list(states)
        wanted = {s.owner_id for s in states if s.owner_id}
        wanted |= {c.owner_id for s in states for c in s.contracts.values() if c.owner_id}
        wanted |= {t.owner_id for s in states for t in s.tasks}
        for _ in range(MANAGER_CHAIN + 1):
            ids = {f"staff:{i}" for i in wanted if i and i not in found}
            if not ids:
                break
            for state in (await self._subjects.load(ids)).values():
                if state.staff is not None:
                    found[state.staff.staff_id] = state.staff
            wanted = {m.manager_id for m in found.values() if m.manager_id}
        return found
