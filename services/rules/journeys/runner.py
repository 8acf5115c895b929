"""Journeys as one rule of the engine: the same state, durable timers and transactions as the
built-in rules.

How a run moves (``docs/journeys.md`` has the picture):

* A subject enters on an event, a date or entering a segment. Entering records a
  :class:`~services.rules.state.JourneyRun` in the subject's state and sets the run's one live
  timer, due at once; every step is taken when a timer fires, so every send, and every
  ``journey.*`` event that analytics counts, leaves in a tick's transaction.
* A tick runs steps until the run must wait (``wait``, ``wait_for``) or leaves. The timer's
  name names the journey, run, version and step index (``onboarding|1f2e…|v2|s03``) and its data
  the step it continues at, so a timer that fires again after a crash takes the same steps and
  decides the same actions, whose keys (``journey:<name>:v<version>:<subject>:<run>:<step>``)
  the notifier sends once.
* Events only move runs on: a goal or exit met, a ``wait_for`` answered. They record that in the
  run and set its next timer, due at once. The run remembers the last trigger that moved it,
  so the same event or timer delivered again decides the same again, and any other (an old
  timer, a repeat of an older event) is ignored.
"""

from __future__ import annotations

import hashlib
import logging
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from prometheus_client import Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field

from services.rules.journeys.catalog import Catalog, Published, full_type
from services.rules.journeys.definition import (
    INLINE_TEMPLATE,
    YEARLY_DATES,
    EmitEvent,
    Journey,
    Outcome,
    Send,
    Step,
    parse_duration,
)
from services.rules.journeys.expressions import (
    EvaluationError,
    compile_condition,
    subject_view,
    to_cel,
    values,
)
from services.rules.sdk import (
    Action,
    CancelTimers,
    Decision,
    Emit,
    Event,
    Priority,
    RuleContext,
    SetTimer,
    TaskSpec,
    Timer,
    Unrouted,
)
from services.rules.state import JourneyMemo, JourneyRun, SubjectState, label
from shared.events.types import (
    EventPayload,
    JourneyEntered,
    JourneyLeft,
    JourneyStepCompleted,
    LeaveReason,
    StepOutcome,
    SubjectLabelled,
    resolve_type,
)
from shared.metrics import preinit

log = logging.getLogger(__name__)
RULE = "journeys"
FINISHED_REMEMBERED = 20
TOMBSTONE_KEPT = timedelta(hours=1)  # a run that left, kept for its tick's redelivery
RECENT_TRIGGERS = 8  # the triggers a run remembers: a tick redone after later ones still counts

ENTERED = Counter("upkeep_journey_entered_total", "Subjects that entered a journey.", ["journey"])
STEPS = Counter(
    "upkeep_journey_steps_total",
    "Journey steps completed, by outcome (sent, unrouted, waited, event, timeout, then, else, "
    "set, emitted, exited).",
    ["journey", "outcome"],
)
LEFT = Counter(
    "upkeep_journey_left_total",
    "Runs that ended, by reason (completed, converted, exited, disabled, ended_by_update).",
    ["journey", "reason"],
)
CONDITION_ERRORS = Counter(
    "upkeep_journey_condition_errors_total",
    "Conditions that failed to evaluate (a missing field, a null compared): taken as false.",
    ["journey"],
)
JOURNEYS = Gauge("upkeep_journeys", "Journeys in the catalogue, by state.", ["state"])
CATALOG_REVISION = Gauge(
    "upkeep_journeys_catalog_refreshed_timestamp_seconds",
    "When this replica last read the journey catalogue.",
)


def preinit_journey_metrics(catalog: Catalog) -> None:
    """Export every journey's counters as 0 before their first use (bounded like the labels)."""
    outcomes = typing.get_args(StepOutcome)
    reasons = typing.get_args(LeaveReason)
    for journey in {catalog.label(name) for name in catalog.current}:
        preinit(ENTERED, [(journey,)])
        preinit(CONDITION_ERRORS, [(journey,)])
        preinit(STEPS, [(journey, outcome) for outcome in outcomes])
        preinit(LEFT, [(journey, reason) for reason in reasons])


_TEXT = ImmutableSandboxedEnvironment(
    autoescape=False,
    undefined=jinja2.ChainableUndefined,  # subject.contracts[0].id of no contract: empty
    finalize=lambda value: "" if value is None else value,  # an unknown tier: empty, not None
)


def render_text(source: str, variables: Mapping[str, Any]) -> str:
    """An inline message's text, with ``{{ subject.name }}`` and the like filled in (Jinja's
    sandbox; what the subject does not have renders empty). Validation refused every text
    that does not compile; one that still fails on this subject's data is sent as written
    rather than stalling the run."""
    try:
        return _TEXT.from_string(source).render(**variables)
    except jinja2.TemplateError:
        log.warning("journey message not rendered; sent as written")
        return source


def moved_by(record: JourneyRun, trigger: str) -> None:
    """``trigger`` moved the run: it is the last, and one of the :data:`RECENT_TRIGGERS`."""
    record.trigger = trigger
    record.recent = [*(t for t in record.recent if t != trigger), trigger][-RECENT_TRIGGERS:]


def waiting_at(timer_data: Mapping[str, Any]) -> int | None:
    """The step a run waits in (a ``wait`` or ``wait_for``), from its timer's data; ``None``
    for a run that has not taken a step yet."""
    resolved = timer_data.get("resolved")
    return int(resolved[0]) if resolved else None


def run_id(journey: str, trigger: str) -> str:
    return hashlib.sha256(f"{journey}|{trigger}".encode()).hexdigest()[:16]


def step_timer(journey: str, run: str, version: int, index: int) -> str:
    return f"{journey}|{run}|v{version}|s{index:02d}"


def run_prefix(journey: str, run: str) -> str:
    return f"{journey}|{run}|"


def stored_moment(moment: datetime) -> datetime:
    """``moment`` as the timer store keeps it: MongoDB's dates have whole milliseconds, so a
    run records its timer's due time as the fired timer carries it (``on_timer`` compares
    them; a microsecond more and the run would never move again)."""
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


def date_timer(journey: str, key: str) -> str:
    return f"{journey}|date|{key}"


def emitted_payload(emit: EmitEvent, subject: str, at: datetime) -> EventPayload:
    """The event an ``emit`` step publishes about ``subject``: its data with the subject's id
    field and (when missing) its time field filled in."""
    model = resolve_type(emit.type)
    if model is None:
        raise ValueError(f"unknown event type {emit.type!r}")
    data = dict(emit.data)
    kind, ident = subject.split(":", 1)
    if model.subject_field == "about":
        data.setdefault("about", subject)
    elif model.subject_kind != kind:
        raise ValueError(f"{model.type_name} is about a {model.subject_kind}, not a {kind}")
    else:
        data.setdefault(model.subject_field, ident)
    if model.time_field is not None:
        data.setdefault(model.time_field, at)
    return model.model_validate(data)


@dataclass
class _Run:
    """One run being moved by one trigger: the decisions it makes, in order."""

    name: str
    journey: Journey
    version: int
    record: JourneyRun
    memo: JourneyMemo
    subject: SubjectState
    ctx: RuleContext
    at: datetime
    out: list[Decision]
    catalog: Catalog
    in_tick: bool = False  # moved by a timer that is firing: never cancel that timer
    observed: bool = True  # count failing conditions (not in a dry run)
    # the subject as a CEL value, made once per call of the rule (the state does not change
    # while the rule decides)
    views: dict[str, Any] = field(default_factory=dict)

    def report(self, payload: EventPayload) -> None:
        self.out.append(Emit(payload.type_name, payload.model_dump(mode="json")))

    def ids(self) -> dict[str, Any]:
        return {
            "about": self.subject.id,
            "journey": self.name,
            "version": self.version,
            "run": self.record.run,
        }

    def step_id(self, index: int) -> str | None:
        return self.journey.steps[index].id if index < len(self.journey.steps) else None

    def completed(
        self, index: int, outcome: str, nxt: int | None, action_key: str | None = None
    ) -> None:
        step = self.journey.steps[index]
        self.report(
            JourneyStepCompleted(
                **self.ids(),
                step=step.id,
                kind=step.kind,
                outcome=outcome,
                next_step=self.step_id(nxt) if nxt is not None else None,
                action_key=action_key,
                completed_at=self.at,
            )
        )

    def wait(self, index: int, due: datetime, data: Mapping[str, Any]) -> None:
        """Stop here: the run continues at step ``index`` when its timer fires at ``due``."""
        name = step_timer(self.name, self.record.run, self.version, index)
        timer_data = {
            "version": self.version,
            "step": index,
            "step_id": self.step_id(index),
            **data,
        }
        due = stored_moment(due)  # as the fired timer will carry it: on_timer compares
        if not self.in_tick and self.record.timer:  # an event moves it: its live timer goes
            # (only that one: an older timer may belong to a tick that has yet to be redone;
            # in a tick, the timer that fires is removed once the tick commits)
            self.out.append(CancelTimers(self.record.timer))
        self.out.append(SetTimer(name, due, timer_data))
        self.record.version, self.record.step = self.version, index
        self.record.timer, self.record.due_at, self.record.timer_data = name, due, timer_data

    def leave(self, reason: str, last: int | None) -> None:
        """End the run (always in a tick). Its record stays a while as a tombstone, so that
        the same timer firing again (its tick did not commit) decides the same again."""
        self.report(
            JourneyLeft(
                **self.ids(),
                reason=reason,
                last_step=self.step_id(last) if last is not None else None,
                left_at=self.at,
            )
        )
        record = self.record
        record.leaving, record.left_at, record.waiting_for = reason, self.at, None
        record.timer, record.due_at = None, None
        if self.record.run not in self.memo.finished:
            self.memo.finished = [*self.memo.finished, self.record.run][-FINISHED_REMEMBERED:]

    def test(self, source: str | None, event: Mapping[str, Any] | None = None) -> bool:
        if source is None:
            return True
        try:
            condition = compile_condition(source)
            if "subject" in condition.names and "subject" not in self.views:
                self.views["subject"] = to_cel(subject_view(self.subject))
            activation = values(self.subject, self.at, event, self.views.get("subject", {}))
            return condition.test(activation)
        except EvaluationError:
            if self.observed:
                CONDITION_ERRORS.labels(self.catalog.label(self.name)).inc()
            # the condition as written, not the evaluator's message (it may quote the data)
            log.info(
                "journey condition failed", extra={"journey": self.name, "condition": source[:200]}
            )
            return False

    # -- taking steps ------------------------------------------------------------------------

    def advance(self, index: int) -> None:
        """Take steps from ``index`` until the run waits or leaves."""
        steps = self.journey.steps
        while True:
            if index >= len(steps):
                self.leave("completed", len(steps) - 1)
                return
            step = steps[index]
            if step.send is not None:
                key = self.send(index, step, step.send)
                self.completed(index, "sent" if key else "unrouted", index + 1, key)
                index += 1
            elif step.wait is not None:
                self.wait(index + 1, self.after_wait(step), {"resolved": [index, "waited"]})
                return
            elif step.wait_for is not None:
                timeout = self.at + parse_duration(step.wait_for.timeout)
                target = self.journey.index_of(step.wait_for.on_timeout, index)
                self.wait(target, timeout, {"resolved": [index, "timeout"], "waiting": index})
                self.record.waiting_for = full_type(step.wait_for.event)
                return
            elif step.branch is not None:
                taken = self.test(step.branch.when)
                chosen = step.branch.then if taken else step.branch.else_
                nxt = self.journey.index_of(chosen, index)
                self.completed(index, "then" if taken else "else", nxt)
                index = nxt
            elif step.set is not None:
                labels = SubjectLabelled(
                    about=self.subject.id,
                    add_tags=step.set.add_tags,
                    remove_tags=step.set.remove_tags,
                    attributes=step.set.attributes,
                    labelled_by=f"journey:{self.name}",
                    labelled_at=self.at,
                )
                self.report(labels)
                label(self.subject, labels, self.at)  # the next steps see it at once
                self.views.clear()
                self.completed(index, "set", index + 1)
                index += 1
            elif step.emit is not None:
                try:
                    self.report(emitted_payload(step.emit, self.subject.id, self.at))
                except ValueError:  # validated at definition time: only a changed model
                    log.exception("journey emit failed", extra={"journey": self.name})
                self.completed(index, "emitted", index + 1)
                index += 1
            else:
                self.completed(index, "exited", None)
                self.leave("exited", index)
                return

    def after_wait(self, step: Step) -> datetime:
        assert step.wait is not None
        due = self.at + (parse_duration(step.wait.for_) if step.wait.for_ else timedelta(0))
        if step.wait.until is None:
            return due
        zone = ZoneInfo(self.subject.timezone)
        local = due.astimezone(zone)
        moment = datetime.combine(local.date(), time.fromisoformat(step.wait.until), zone)
        if moment < local:
            moment = datetime.combine(
                local.date() + timedelta(days=1), time.fromisoformat(step.wait.until), zone
            )
        return moment.astimezone(UTC)

    def send(self, index: int, step: Step, send: Send) -> str | None:
        """Decide the step's action; its key, or ``None`` when there is nobody to send it to
        (counted as unrouted)."""
        key = f"journey:{self.name}:v{self.version}:{self.subject.id}:{self.record.run}:{step.id}"
        view = values_for_text(self.subject)
        data: dict[str, Any] = {
            "subject_id": self.subject.id,
            "subject_name": view["subject"]["name"],
            "journey": self.name,
            "journey_step": step.id,
            **send.data,
        }
        marketing = send.marketing
        staff_id: str | None = None
        if send.to in ("customer", "channel"):
            part = self.subject.customer if send.to == "customer" else self.subject.channel
            if part is None:
                self.out.append(Unrouted("no_recipient"))
                return None
            locale = part.locale
        else:
            staff_id = self.staff_for(send.to)
            if staff_id is None:
                return None
            member = self.ctx.staff.get(staff_id) or self.ctx.roster.staff.get(staff_id)
            locale = member.locale if member else "en"
            marketing = bool(marketing)
        if send.message is not None:
            text = send.message.get(locale) or send.message["en"]  # type: ignore[call-overload]
            data["message_subject"] = render_text(text.subject, view)
            data["message_body"] = render_text(text.body, view)
        common: dict[str, Any] = {
            "template": send.template_name,
            "due_at": self.at,
            "data": data,
            "purpose": send.purpose,
        }
        if staff_id is None:
            priority: Priority = "marketing" if marketing is not False else "transactional"
            if send.to == "customer":
                action = Action.to_customer(
                    RULE, self.subject, key, kind=send.kind, priority=priority, **common
                )
            else:
                action = Action.to_channel(RULE, self.subject, key, **common)
                action = _with(action, kind=send.kind, priority=priority)
        elif send.kind == "task":
            due = self.at + parse_duration(send.due_in)
            action = Action.to_staff(
                RULE,
                self.subject,
                key,
                staff_id,
                self.ctx,
                kind="task",
                task_spec=TaskSpec(due, send.priority),
                **common,
            )
        else:
            action = Action.to_staff(
                RULE, self.subject, key, staff_id, self.ctx, kind=send.kind, **common
            )
            if marketing:
                action = _with(action, priority="marketing")
        self.out.append(action)
        return key

    def staff_for(self, to: str) -> str | None:
        owner = self.subject.owner_id
        if to == "owner":
            if owner is None:
                self.out.append(Unrouted("no_owner"))
            return owner
        if to == "manager":
            manager = self.ctx.manager_of(owner)
            if manager is None:
                self.out.append(Unrouted("no_owner" if owner is None else "no_manager"))
            return manager
        team = [m for m in self.ctx.roster.team(to.removeprefix("team:")) if m.active]
        if not team:
            self.out.append(Unrouted("no_staff"))
            return None
        return min(team, key=lambda m: (self.ctx.roster.load(m.staff_id), m.staff_id)).staff_id


def _with(action: Action, **changes: Any) -> Action:
    from dataclasses import replace

    return replace(action, **changes)


def values_for_text(state: SubjectState) -> dict[str, Any]:
    """The variables of an inline message: ``subject`` (as in conditions)."""
    from services.rules.journeys.expressions import subject_view

    return {"subject": subject_view(state)}


class JourneysConfig(BaseModel):
    """``rules.yaml`` section ``journeys``: where its definitions come from is the service's
    (``UPKEEP_RULES_JOURNEYS_DIR``, the API); this is how often a replica reads them again."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    refresh_s: float = Field(default=2.0, gt=0, le=300)


class Journeys:
    """The rule that runs every journey in its :class:`Catalog` (``rules.yaml``: section
    ``journeys``; the service keeps the catalogue fresh)."""

    name = RULE
    keeps_state = True  # its runs live in the subject's state: the engine saves it on ticks
    templates: Mapping[str, frozenset[str]] = {
        INLINE_TEMPLATE: frozenset(
            {
                "message_subject",
                "message_body",
                "subject_id",
                "subject_name",
                "journey",
                "journey_step",
            }
        )
    }

    def __init__(
        self,
        catalog: Catalog | None = None,
        config: JourneysConfig | None = None,
        *,
        observed: bool = True,
    ) -> None:
        """``observed=False``: a rehearsal (a dry run) that moves no metric."""
        self.catalog = catalog or Catalog()
        self.config = config or JourneysConfig()
        self.observed = observed
        self._views: dict[str, Any] = {}  # the subject's CEL value, for one call

    # -- the engine's calls ------------------------------------------------------------------

    def on_event(self, event: Event, subject: SubjectState, ctx: RuleContext) -> Iterable[Decision]:
        if subject.kind not in ("customer", "channel"):
            return []
        out: list[Decision] = []
        self._views = {}
        names = {p.name for p in self.catalog.running(subject.kind)} | set(subject.journeys)
        payload: dict[str, Any] | None = None
        for name in sorted(names):
            memo = subject.journeys.get(name)
            if memo is not None and not event.repeat:
                _prune(memo, ctx.now)
            moved = self._again(name, memo, event.id, out) if memo else set()
            if event.repeat:
                continue
            if payload is None:
                payload = event.payload.model_dump()
            published = self.catalog.current.get(name)
            if memo is not None:
                for record in list(memo.runs.values()):
                    if record.run not in moved and record.leaving is None:
                        self._on_run_event(name, memo, record, event, payload, subject, ctx, out)
            if (
                published is not None
                and published.running
                and published.journey.subject == subject.kind
            ):
                self._maybe_enter(published, event, payload, subject, ctx, out)
        return out

    def on_timer(self, timer: Timer, subject: SubjectState, ctx: RuleContext) -> Iterable[Decision]:
        name, _, rest = timer.name.partition("|")
        out: list[Decision] = []
        self._views = {}
        if rest.startswith("date|"):
            self._date_fired(name, rest.removeprefix("date|"), timer, subject, ctx, out)
            return out
        memo = subject.journeys.get(name)
        if memo is not None:
            _prune(memo, timer.due_at)
        record = memo.runs.get(rest.split("|", 1)[0]) if memo else None
        if memo is None or record is None:
            return out  # a timer of a run that ended
        occurrence = f"{timer.name}@{timer.due_at.isoformat()}"
        fresh = record.timer == timer.name and record.due_at == timer.due_at and not record.left_at
        if fresh or record.trigger == occurrence:
            moved_by(record, occurrence)
            self._continue(name, memo, record, timer, subject, ctx, out)
        elif occurrence in record.recent:
            # a tick that did not commit, redone after an event moved the run on: what it
            # published is published again (same keys, same event ids); where the run is stays
            ghost = subject.model_copy(deep=True)
            ghost_memo = ghost.journeys[name]
            ghost_out: list[Decision] = []
            ghost_run = ghost_memo.runs[record.run]
            self._continue(name, ghost_memo, ghost_run, timer, ghost, ctx, ghost_out)
            out += [d for d in ghost_out if isinstance(d, Action | Emit)]
        return out  # else an older timer of the run (moved on since): not ours to act on

    @property
    def uses_roster(self) -> bool:
        """A send to ``team:<name>`` picks its least loaded member: the engine reads the loads
        only while a running journey has one."""
        return self.catalog.sends_to_teams

    def committed(self, emit: Emit) -> None:
        """Count a ``journey.*`` event once its transaction committed (the engine calls it
        only when it is observed)."""
        label = self.catalog.label(str(emit.data.get("journey", "")))
        if emit.type == JourneyEntered.type_name:
            ENTERED.labels(label).inc()
        elif emit.type == JourneyStepCompleted.type_name:
            STEPS.labels(label, str(emit.data["outcome"])).inc()
        elif emit.type == JourneyLeft.type_name:
            LEFT.labels(label, str(emit.data["reason"])).inc()

    # -- events ------------------------------------------------------------------------------

    def _again(self, name: str, memo: JourneyMemo, trigger: str, out: list[Decision]) -> set[str]:
        """The runs this event moved already (a redelivery): the same timer again."""
        moved = set()
        for record in memo.runs.values():
            if record.trigger == trigger and record.timer is not None and record.due_at:
                out.append(SetTimer(record.timer, record.due_at, record.timer_data))
                moved.add(record.run)
        return moved

    def _on_run_event(
        self,
        name: str,
        memo: JourneyMemo,
        record: JourneyRun,
        event: Event,
        payload: Mapping[str, Any],
        subject: SubjectState,
        ctx: RuleContext,
        out: list[Decision],
    ) -> None:
        journey = self.catalog.version(name, record.version)
        if journey is None:
            return
        if event.time < record.entered_at:
            return  # it happened before the run began (a late or historical event)
        run = self._run(name, journey, record.version, record, memo, subject, ctx, ctx.now, out)
        if journey.goal is not None and self._met(run, journey.goal, event, payload):
            self._leaving(run, "converted", event.id)
        elif any(self._met(run, exit_, event, payload) for exit_ in journey.exits):
            self._leaving(run, "exited", event.id)
        elif record.waiting_for == event.type:
            waiting = int(record.timer_data.get("waiting", record.step))
            wait_for = journey.steps[waiting].wait_for
            if wait_for is not None and run.test(wait_for.when, payload):
                target = journey.index_of(wait_for.on_event, waiting)
                record.waiting_for = None
                moved_by(record, event.id)
                run.wait(target, ctx.now, {"resolved": [waiting, "event"]})

    def _met(self, run: _Run, outcome: Outcome, event: Event, payload: Mapping[str, Any]) -> bool:
        if outcome.event is not None and full_type(outcome.event) != event.type:
            return False
        return run.test(outcome.when, payload)

    def _leaving(self, run: _Run, reason: str, trigger: str) -> None:
        """The goal or an exit was met: the run leaves at once, in a tick."""
        record = run.record
        record.leaving, record.waiting_for = reason, None
        moved_by(record, trigger)
        name, due = f"{run.name}|{record.run}|leave", stored_moment(run.ctx.now)
        if record.timer:  # its live timer only (see _Run.wait)
            run.out.append(CancelTimers(record.timer))
        record.timer, record.due_at = name, due
        record.timer_data = {
            "reason": reason,
            "step": record.step,
            "at": waiting_at(record.timer_data),
        }
        run.out.append(SetTimer(name, due, record.timer_data))

    def _maybe_enter(
        self,
        published: Published,
        event: Event,
        payload: Mapping[str, Any],
        subject: SubjectState,
        ctx: RuleContext,
        out: list[Decision],
    ) -> None:
        memo = subject.journeys.get(published.name) or JourneyMemo()
        try:
            self._enter_on_event(published, memo, event, payload, subject, ctx, out)
        finally:  # a subject that never entered nor was in the segment keeps no memo
            if memo != JourneyMemo():
                subject.journeys[published.name] = memo

    def _enter_on_event(
        self,
        published: Published,
        memo: JourneyMemo,
        event: Event,
        payload: Mapping[str, Any],
        subject: SubjectState,
        ctx: RuleContext,
        out: list[Decision],
    ) -> None:
        journey, trigger = published.journey, published.journey.trigger
        if trigger.kind == "date":
            self._schedule_dates(published, memo, subject, ctx, out)
            return
        probe = self._run(
            published.name, journey, published.version, None, memo, subject, ctx, ctx.now, out
        )
        if trigger.kind == "segment":
            inside = probe.test(trigger.segment)
            entering = inside and not memo.in_segment
            memo.in_segment = inside
            if not entering:
                return
            label = "segment"
        else:
            if trigger.event is None or full_type(trigger.event) != event.type:
                return
            if not probe.test(trigger.when, payload):
                return
            label = event.type
        at = min(event.time, ctx.now)  # the run begins when its trigger happened
        if ctx.now - at > parse_duration(trigger.max_age):
            return  # a backfill of old history enters no one
        rid = run_id(published.name, event.id)
        if not self._may_enter(journey, memo, rid, ctx.now):
            return
        record = self._enter(published, memo, rid, event.id, at, {"trigger": label})
        run = self._run(
            published.name, journey, published.version, record, memo, subject, ctx, ctx.now, out
        )
        run.wait(0, at, {"entered": label})

    def _may_enter(self, journey: Journey, memo: JourneyMemo, rid: str, now: datetime) -> bool:
        if rid in memo.runs or rid in memo.finished:
            return False
        live = [r for r in memo.runs.values() if r.leaving is None]
        if len(live) >= journey.reentry.max_concurrent:
            return False
        mode = journey.reentry.mode
        if mode == "once":
            return memo.entries == 0
        if mode == "once_per" and memo.last_entered_at is not None:
            assert journey.reentry.period is not None
            return now - memo.last_entered_at >= parse_duration(journey.reentry.period)
        return True

    def _enter(
        self,
        published: Published,
        memo: JourneyMemo,
        rid: str,
        trigger: str,
        now: datetime,
        data: dict[str, Any],
    ) -> JourneyRun:
        record = JourneyRun(
            run=rid,
            version=published.version,
            step=0,
            entered_at=now,
            trigger=trigger,
            recent=[trigger],
            data=data,
        )
        memo.runs[rid] = record
        memo.entries += 1
        memo.last_entered_at = now
        return record

    # -- dates -------------------------------------------------------------------------------

    def _schedule_dates(
        self,
        published: Published,
        memo: JourneyMemo,
        subject: SubjectState,
        ctx: RuleContext,
        out: list[Decision],
    ) -> None:
        """Set a timer for each upcoming occurrence of the trigger's date (once per
        occurrence: the memo's ``data`` remembers which are set)."""
        scheduled = set(memo.scheduled)
        for key, due in upcoming(published.journey, subject, ctx.now):
            if key not in scheduled:
                out.append(SetTimer(date_timer(published.name, key), due, {"key": key}))
                scheduled.add(key)
        memo.scheduled = sorted(scheduled)[-50:]

    def _date_fired(
        self,
        name: str,
        key: str,
        timer: Timer,
        subject: SubjectState,
        ctx: RuleContext,
        out: list[Decision],
    ) -> None:
        published = self.catalog.current.get(name)
        memo = subject.journeys.setdefault(name, JourneyMemo())
        memo.scheduled = [k for k in memo.scheduled if k != key]
        if published is None or not published.running or published.journey.trigger.date is None:
            return
        still = dict(upcoming(published.journey, subject, timer.due_at - timedelta(seconds=1)))
        if still.get(key) != timer.due_at:
            return  # the date moved (a changed birthday, a renewed contract): not this one
        rid = run_id(name, key)
        occurrence = f"{timer.name}@{timer.due_at.isoformat()}"
        record = memo.runs.get(rid)
        if record is None:
            probe = self._run(
                name,
                published.journey,
                published.version,
                None,
                memo,
                subject,
                ctx,
                timer.due_at,
                out,
            )
            if not probe.test(published.journey.trigger.when):
                return
            if not self._may_enter(published.journey, memo, rid, timer.due_at):
                return
            data = {"trigger": f"date:{published.journey.trigger.date}", "key": key}
            if "@" in key:
                data["contract_id"] = key.split("@", 1)[0]
            record = self._enter(published, memo, rid, occurrence, timer.due_at, data)
        elif record.trigger != occurrence:
            return
        run = self._run(
            name,
            published.journey,
            published.version,
            record,
            memo,
            subject,
            ctx,
            timer.due_at,
            out,
            in_tick=True,
        )
        run.report(
            JourneyEntered(
                **run.ids(), trigger=str(record.data["trigger"]), entered_at=timer.due_at
            )
        )
        run.advance(0)
        if published.journey.trigger.date in YEARLY_DATES:
            self._schedule_dates(published, memo, subject, RuleContext(now=timer.due_at), out)

    # -- timers ------------------------------------------------------------------------------

    def _continue(
        self,
        name: str,
        memo: JourneyMemo,
        record: JourneyRun,
        timer: Timer,
        subject: SubjectState,
        ctx: RuleContext,
        out: list[Decision],
    ) -> None:
        data = timer.data
        version = int(data.get("version", record.version))
        journey = self.catalog.version(name, version)
        published = self.catalog.current.get(name)
        at = timer.due_at
        if journey is None:
            return
        run = self._run(name, journey, version, record, memo, subject, ctx, at, out, in_tick=True)
        if "reason" in data:  # the goal or an exit was met while the run waited at step "at"
            at_step = data.get("at")
            run.leave(str(data["reason"]), int(at_step) if at_step is not None else None)
            return
        index = int(data.get("step", 0))
        if "entered" in data:
            run.report(JourneyEntered(**run.ids(), trigger=str(data["entered"]), entered_at=at))
        if published is None or not published.running:
            run.leave("disabled", waiting_at(data))
            return
        if version != published.version and published.journey.on_update == "migrate":
            step_id = data.get("step_id")
            ids = [s.id for s in published.journey.steps]
            if step_id is not None and step_id not in ids:
                run.leave("ended_by_update", waiting_at(data))
                return
            run.journey, run.version = published.journey, published.version
            index = ids.index(step_id) if step_id is not None else len(ids)
        resolved = data.get("resolved")
        if resolved:  # the wait that this timer ends: completed, in the timer's version
            step = journey.steps[int(resolved[0])]
            run.report(
                JourneyStepCompleted(
                    about=subject.id,
                    journey=name,
                    version=version,
                    run=record.run,
                    step=step.id,
                    kind=step.kind,
                    outcome=str(resolved[1]),
                    next_step=run.step_id(index),
                    completed_at=at,
                )
            )
        record.waiting_for = None
        run.advance(index)

    def _run(
        self,
        name: str,
        journey: Journey,
        version: int,
        record: JourneyRun | None,
        memo: JourneyMemo,
        subject: SubjectState,
        ctx: RuleContext,
        at: datetime,
        out: list[Decision],
        in_tick: bool = False,
    ) -> _Run:
        placeholder = record or JourneyRun(
            run="0", version=version, step=0, entered_at=at, trigger=""
        )
        return _Run(
            name,
            journey,
            version,
            placeholder,
            memo,
            subject,
            ctx,
            at,
            out,
            self.catalog,
            in_tick=in_tick,
            observed=self.observed,
            views=self._views,
        )


def upcoming(
    journey: Journey, subject: SubjectState, now: datetime
) -> Iterator[tuple[str, datetime]]:
    """The next occurrence of a date trigger after ``now``, per contract or per year: (key,
    UTC moment)."""
    trigger = journey.trigger
    field = trigger.date
    if field is None:
        return
    zone = ZoneInfo(subject.timezone)
    at = time.fromisoformat(trigger.at)
    offset = timedelta(days=trigger.offset_days)

    def moment(day: date) -> datetime:
        return datetime.combine(day + offset, at, zone).astimezone(UTC)

    if field in YEARLY_DATES:
        customer = subject.customer
        base = getattr(customer, field.split(".", 1)[1]) if customer else None
        if base is None:
            return
        for year in range(now.astimezone(zone).year - 1, now.astimezone(zone).year + 2):
            try:
                day = base.replace(year=year)
            except ValueError:  # 29 February in a common year: the 28th
                day = base.replace(year=year, day=28)
            if moment(day) > now:
                yield f"{year}", moment(day)
                return
        return
    attr = field.split(".", 1)[1]
    for contract in subject.contracts.values():
        if contract.status not in ("active", "pending", "renewed"):  # renewed: its new term
            continue
        day = getattr(contract, attr)
        if moment(day) > now:
            yield f"{contract.contract_id}@{day.isoformat()}", moment(day)


def _prune(memo: JourneyMemo, now: datetime) -> None:
    """Forget the tombstones of runs that left more than :data:`TOMBSTONE_KEPT` ago."""
    old = [r.run for r in memo.runs.values() if r.left_at and now - r.left_at > TOMBSTONE_KEPT]
    for rid in old:
        del memo.runs[rid]
