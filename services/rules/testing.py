"""Run rules against a sequence of events at chosen times, in memory (for rule authors' tests).

    harness = RuleHarness(ContractRenewal())
    harness.send("contract.upserted", at=datetime(2026, 1, 1, tzinfo=UTC), contract_id="K-1",
                 customer_id="C-1", start_date="2025-02-01", end_date="2026-01-31")
    actions = harness.advance(to=datetime(2026, 2, 5, tzinfo=UTC))

State is updated with the same :func:`~services.rules.state.apply` the service uses, and
decisions are applied with the same :func:`~services.rules.sdk.apply_decisions`; timers fire
in due order with the clock set to their due time.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from services.rules.sdk import (
    Action,
    Decision,
    Emit,
    Event,
    Roster,
    Rule,
    RuleContext,
    Timer,
    apply_decisions,
    task_created,
)
from services.rules.state import StaffState, SubjectState, apply
from shared.events.envelope import CanonicalEvent
from shared.events.types import EventPayload, resolve_type


class RuleHarness:
    def __init__(self, *rules: Rule, config: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.rules = {rule.name: rule for rule in rules}
        self.config = config or {}
        self.states: dict[str, SubjectState] = {}
        self.timers: dict[str, Timer] = {}
        self.actions: list[Action] = []
        self.emitted: list[Emit] = []
        self.unrouted: list[tuple[str, str, str]] = []  # (rule, subject, reason)
        self._roster = Roster()  # its round-robin and pending memory outlives each call
        self._ids = itertools.count(1)
        self._now = datetime.min.replace(tzinfo=UTC)

    # -- driving -----------------------------------------------------------------------------

    def send(
        self, type_name: str, *, at: datetime, event_id: str | None = None, **data: Any
    ) -> list[Action]:
        """Deliver an event (short or full type name) at ``at``, firing due timers first."""
        new = self.advance(to=at)
        model = resolve_type(type_name)
        if model is None:
            raise KeyError(type_name)
        payload = model.model_validate(data)
        event = CanonicalEvent.build(
            event_id=event_id or f"test-{next(self._ids)}",
            source="test",
            payload=payload,
            time=payload.event_time() or at,
            source_offset="Z",
        )
        return new + self.deliver(event, at=at)

    def deliver(self, event: CanonicalEvent, *, at: datetime) -> list[Action]:
        """Deliver a prepared canonical event (e.g. a redelivery of the same one)."""
        self._now = at
        state, changed = apply(
            self.states.get(event.subject) or SubjectState(id=event.subject), event
        )
        self.states[event.subject] = state
        if not changed:
            return []
        produced: list[Action] = []
        incoming = Event.of(event, event.payload())
        for rule in self.rules.values():
            decisions = rule.on_event(incoming, state, self.context(rule, at))
            produced += self._record(rule.name, event.subject, decisions)
        return produced

    def advance(self, *, to: datetime) -> list[Action]:
        """Fire every timer due at or before ``to``, in due order."""
        produced: list[Action] = []
        while True:
            due = sorted(
                (t for t in self.timers.values() if t.due_at <= to), key=lambda t: (t.due_at, t.id)
            )
            if not due:
                return produced
            timer = due[0]
            del self.timers[timer.id]
            rule = self.rules[timer.rule]
            self._now = timer.due_at
            state = self.states.get(timer.subject) or SubjectState(id=timer.subject)
            produced += self._record(
                rule.name,
                timer.subject,
                rule.on_timer(timer, state, self.context(rule, timer.due_at)),
            )

    # -- inspecting --------------------------------------------------------------------------

    def pending(self, rule: str | None = None) -> list[Timer]:
        return sorted(
            (t for t in self.timers.values() if rule is None or t.rule == rule),
            key=lambda t: (t.due_at, t.id),
        )

    def context_staff(self) -> dict[str, StaffState]:
        return {s.staff.staff_id: s.staff for s in self.states.values() if s.staff is not None}

    def context(self, rule: Rule, now: datetime) -> RuleContext:
        """Every member of staff is known, and the roster's loads are exact (counted from the
        states as they are now)."""
        staff = self.context_staff()
        owned: dict[str, int] = {}
        open_tasks: dict[str, int] = {}
        for state in self.states.values():
            if state.kind in ("customer", "channel") and state.owner_id:
                owned[state.owner_id] = owned.get(state.owner_id, 0) + 1
            for task in state.tasks:
                open_tasks[task.owner_id] = open_tasks.get(task.owner_id, 0) + 1
        self._roster.staff, self._roster.owned, self._roster.open_tasks = staff, owned, open_tasks
        return RuleContext(
            now=now,
            config=self.config.get(rule.name, {}),
            staff=dict[str, StaffState](staff),
            roster=self._roster,
        )

    def _record(self, rule: str, subject: str, decisions: Iterable[Decision]) -> list[Action]:
        outcome = apply_decisions(rule, subject, decisions)
        for prefix in outcome.cancel_prefixes:
            for key in [
                k
                for k, t in self.timers.items()
                if t.rule == rule and t.subject == subject and t.name.startswith(prefix)
            ]:
                del self.timers[key]
        for timer in outcome.set_timers:
            self.timers[timer.id] = timer
        self.actions += outcome.actions
        self.emitted += outcome.emits
        self.unrouted += [(rule, subject, reason) for reason in outcome.unrouted]
        produced = list(outcome.actions)
        payloads: list[tuple[str, EventPayload]] = []
        for emit in outcome.emits:  # like the service: emitted events come back as events
            model = resolve_type(emit.type)
            if model is None:
                raise KeyError(emit.type)
            payloads.append((f"emit-{next(self._ids)}", model.model_validate(dict(emit.data))))
        for action in outcome.actions:  # and so does every task, identified by its key
            owner = self.context_staff().get(action.recipient.id)
            if (created := task_created(action, owner.team if owner else None)) is not None:
                payloads.append((f"task|{action.key}", created))
        for event_id, payload in payloads:
            event = CanonicalEvent.build(
                event_id=event_id,
                source="test",
                payload=payload,
                time=payload.event_time() or self._now,
                source_offset="Z",
            )
            produced += self.deliver(event, at=self._now)
        return produced
