"""The engine's part in the people side: tasks published as events, the roster, and an
assignment that holds within a batch and across a redelivery."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from services.rules.builtin.assignment import Assignment, AssignmentConfig
from services.rules.engine import RulesEngine
from services.rules.sdk import Action, Decision, Event, Roster, RuleContext, Timer, task_created
from services.rules.state import SubjectState
from services.rules.store import InMemorySubjectStore, InMemoryTimerStore
from shared.events.actions import ActionMessage
from shared.events.envelope import CanonicalEvent
from shared.events.types import resolve_type
from shared.kafka.messages import Outgoing, StoredRecord

NOW = datetime(2026, 5, 4, 9, tzinfo=UTC)


def record(offset: int, type_name: str, **data: Any) -> StoredRecord:
    payload = resolve_type(type_name).model_validate(data)  # type: ignore[union-attr]
    event = CanonicalEvent.build(
        event_id=f"e-{offset}", source="t", payload=payload, time=NOW, source_offset="Z"
    )
    return StoredRecord("events", 0, offset, event.to_json(), event.subject.encode())


def events_out(messages: list[Outgoing]) -> list[CanonicalEvent]:
    return [CanonicalEvent.from_json(m.value) for m in messages if m.topic == "events"]


def back(messages: list[Outgoing], first: int) -> list[StoredRecord]:
    """The derived events as the engine would read them back from the topic."""
    return [
        StoredRecord("events", 0, first + n, m.value, m.key)
        for n, m in enumerate(m for m in messages if m.topic == "events")
    ]


class CallTask:
    name = "call"
    templates: Mapping[str, frozenset[str]] = {}

    def on_event(self, event: Event, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        if event.type == "upkeep.customer.upserted.v1":
            yield Action.task(
                self.name,
                subject,
                f"call:{subject.id}",
                "S-1",
                ctx,
                template="t",
                due_at=ctx.now,
                task_due=ctx.now + timedelta(days=1),
                priority="high",
            )

    def on_timer(self, timer: Timer, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        return iter(())


def engine(*rules: Any, subjects: InMemorySubjectStore | None = None) -> RulesEngine:
    return RulesEngine(
        list(rules),
        subjects or InMemorySubjectStore(),
        InMemoryTimerStore(),
        events_topic="events",
        actions_topic="actions",
        clock=lambda: NOW,
    )


async def test_a_task_action_carries_its_spec_and_is_published_as_task_created() -> None:
    e = engine(CallTask())
    staff = record(0, "staff.upserted", staff_id="S-1", name="Sam", timezone="UTC", team="east")
    await e.handle([staff])
    result = await e.handle(
        [record(1, "customer.upserted", customer_id="C-1", name="Acme", timezone="UTC")]
    )
    (action,) = [
        ActionMessage.model_validate(orjson.loads(m.value))
        for m in result.messages
        if m.topic == "actions"
    ]
    assert action.task is not None
    assert (action.task.priority, action.task.team) == ("high", "east")
    assert action.task.due_at == NOW + timedelta(days=1)
    (created,) = events_out(result.messages)
    assert created.type == "upkeep.task.created.v1"
    assert created.subject == "customer:C-1"
    again = await e.handle(
        [record(1, "customer.upserted", customer_id="C-1", name="Acme", timezone="UTC")]
    )
    assert [x.id for x in events_out(again.messages)] == [created.id]  # the same event again
    await e.handle(back(result.messages, 2))
    state = (await e._subjects.load({"customer:C-1"}))["customer:C-1"]
    assert [t.task_id for t in state.tasks] == ["call:customer:C-1"]


async def test_events_of_one_unowned_customer_in_a_batch_assign_it_once() -> None:
    subjects = InMemorySubjectStore()
    e = engine(Assignment(AssignmentConfig(notify_owner=False)), subjects=subjects)
    await e.handle(
        [
            record(0, "staff.upserted", staff_id="S-1", name="A", timezone="UTC"),
            record(1, "staff.upserted", staff_id="S-2", name="B", timezone="UTC"),
        ]
    )
    batch = [
        record(2, "customer.upserted", customer_id="C-1", name="Acme", timezone="UTC"),
        record(
            3,
            "customer.interaction",
            customer_id="C-1",
            interaction_id="I-1",
            kind="call",
            occurred_at=NOW.isoformat(),
        ),
        record(4, "customer.upserted", customer_id="C-2", name="Bolt", timezone="UTC"),
    ]
    result = await e.handle(batch)
    assigned = [(x.subject, x.data["owner_id"]) for x in events_out(result.messages)]
    assert assigned == [("customer:C-1", "S-1"), ("customer:C-2", "S-2")]  # by load
    await e.handle(back(result.messages, 5))
    states = await subjects.load({"customer:C-1", "customer:C-2"})
    assert {s: st.owner_id for s, st in states.items()} == {
        "customer:C-1": "S-1",
        "customer:C-2": "S-2",
    }
    roster = await subjects.roster()
    assert roster.owned == {"S-1": 1, "S-2": 1}


class CountingStore(InMemorySubjectStore):
    def __init__(self) -> None:
        super().__init__()
        self.roster_reads = 0

    async def roster(self) -> Roster:
        self.roster_reads += 1
        return await super().roster()


async def test_the_roster_pass_is_made_only_for_a_rule_that_reads_the_loads() -> None:
    without, with_ = CountingStore(), CountingStore()
    plain = engine(CallTask(), subjects=without)
    assigning = engine(CallTask(), Assignment(AssignmentConfig()), subjects=with_)
    for e in (plain, assigning):
        await e.handle(
            [record(0, "staff.upserted", staff_id="S-1", name="S", timezone="UTC", team="east")]
        )
        result = await e.handle(
            [record(1, "customer.upserted", customer_id="C-1", name="Acme", timezone="UTC")]
        )
        (task,) = [
            ActionMessage.model_validate(orjson.loads(m.value))
            for m in result.messages
            if m.topic == "actions" and b'"kind":"task"' in m.value
        ]
        assert task.task is not None
        assert task.task.team == "east"  # the staff seen in events, with or without the pass
    assert (without.roster_reads, with_.roster_reads) == (0, 1)


def test_a_task_about_no_customer_or_channel_is_not_chased() -> None:
    """A scheduled job's task (subject ``schedule:…``) is stored by the notifier; there is no
    subject whose state could hold it, so no task.created is made for it."""
    subject = SubjectState(id="schedule:churn/weekly-at-risk")
    ctx = RuleContext(now=NOW)
    action = Action.task("churn", subject, "churn:weekly:S-1", "S-1", ctx, template="t", due_at=NOW)
    assert action.task_spec is not None
    assert task_created(action, None) is None
    assert task_created(replace(action, subject="customer:C-1"), None) is not None
