"""The engine's part in journeys: runs kept in the subject's state across events and ticks, a
tick whose transaction did not commit deciding the same again, redelivered events, and the
journey metrics counted once committed (never by a rehearsal)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY

from services.rules.engine import RulesEngine
from services.rules.journeys.catalog import Catalog, Published
from services.rules.journeys.definition import validate
from services.rules.journeys.runner import Journeys
from services.rules.store import InMemorySubjectStore, InMemoryTimerStore
from shared.events.actions import ActionMessage
from shared.events.envelope import CanonicalEvent
from shared.events.types import resolve_type
from shared.kafka.messages import HandlerResult, StoredRecord

T0 = datetime(2026, 5, 4, 9, tzinfo=UTC)
JOURNEY = {
    "name": "welcome-call",
    "subject": "customer",
    "trigger": {"event": "customer.upserted"},
    "steps": [
        {
            "id": "hello",
            "send": {"to": "customer", "message": {"en": {"subject": "Hi", "body": "x"}}},
        },
        {"id": "tag", "set": {"add_tags": ["welcomed"]}},
        {"id": "note", "set": {"attributes": {"welcome": "sent"}}},
        {"id": "later", "wait": {"for": "1d"}},
        {
            "id": "call",
            "send": {
                "kind": "task",
                "to": "owner",
                "message": {"en": {"subject": "Call", "body": "y"}},
            },
        },
    ],
}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def record(offset: int, event_id: str, type_name: str, **data: Any) -> StoredRecord:
    payload = resolve_type(type_name).model_validate(data)  # type: ignore[union-attr]
    event = CanonicalEvent.build(
        event_id=event_id, source="t", payload=payload, time=T0, source_offset="Z"
    )
    return StoredRecord("events", 0, offset, event.to_json(), event.subject.encode())


def setup(
    observed: bool = True,
) -> tuple[RulesEngine, InMemorySubjectStore, InMemoryTimerStore, Clock, Journeys]:
    catalog = Catalog()
    catalog.replace([Published("welcome-call", 1, validate(JOURNEY), enabled=True)], [])
    rule = Journeys(catalog)
    subjects, timers, clock = InMemorySubjectStore(), InMemoryTimerStore(), Clock()
    engine = RulesEngine(
        [rule],
        subjects,
        timers,
        events_topic="events",
        actions_topic="actions",
        clock=clock,
        observed=observed,
    )
    return engine, subjects, timers, clock, rule


def upserted(offset: int = 0) -> StoredRecord:
    return record(
        offset,
        "crm-1",
        "customer.upserted",
        customer_id="C-1",
        name="Acme",
        timezone="UTC",
        email="a@example.com",
        owner_id="S-1",
    )


def keys(result: HandlerResult) -> list[str]:
    return [
        ActionMessage.model_validate_json(m.value).key
        for m in result.messages
        if m.topic == "actions"
    ]


def derived(result: HandlerResult) -> list[CanonicalEvent]:
    return [CanonicalEvent.from_json(m.value) for m in result.messages if m.topic == "events"]


async def commit(result: HandlerResult) -> None:
    for hook in result.after_commit:
        done = hook()
        if done is not None:
            await done


async def test_a_run_lives_in_the_state_and_its_steps_are_taken_in_ticks() -> None:
    engine, subjects, timers, _clock, _ = setup()
    result = await engine.handle([upserted()])
    assert keys(result) == []  # an event only enters: every step is taken in a tick
    memo = subjects.states["customer:C-1"].journeys["welcome-call"]
    (run,) = memo.runs.values()
    assert (run.step, run.entered_at) == (0, T0)
    assert result.tick_soon  # the first step is due at once
    tick = await engine.tick({0})
    await commit(tick)
    (hello,) = keys(tick)
    assert hello == f"journey:welcome-call:v1:customer:C-1:{run.run}:hello"
    types = [e.type for e in derived(tick)]
    assert types.count("upkeep.subject.labelled.v1") == 2
    ids = [e.id for e in derived(tick)]
    assert len(ids) == len(set(ids))  # two events of one type from one tick: two identities
    saved = subjects.states["customer:C-1"].journeys["welcome-call"].runs[run.run]
    assert saved.step == 4  # saved after the tick: it waits for the call step
    assert [t.due_at for t in await timers.pending("customer:C-1")] == [T0 + timedelta(days=1)]


async def test_a_tick_that_did_not_commit_fires_again_and_decides_the_same() -> None:
    engine, _subjects, _timers, clock, _ = setup()
    await commit(await engine.handle([upserted()]))
    lost = await engine.tick({0})  # its transaction aborts: no after-commit hooks run
    again = await engine.tick({0})
    assert keys(again) == keys(lost)
    assert [e.id for e in derived(again)] == [e.id for e in derived(lost)]
    await commit(again)
    assert keys(await engine.tick({0})) == []  # committed: nothing fires a third time
    clock.now = T0 + timedelta(days=1)
    (call,) = keys(await engine.tick({0}))
    assert call.endswith(":call")


async def test_a_redelivered_event_starts_no_second_run_and_sets_the_same_timer() -> None:
    engine, subjects, timers, _clock, _ = setup()
    await engine.handle([upserted()])  # not committed: the batch comes again
    await engine.handle([upserted()])
    assert len(subjects.states["customer:C-1"].journeys["welcome-call"].runs) == 1
    assert len(await timers.pending("customer:C-1")) == 1
    await commit(await engine.tick({0}))
    # the same event again under another offset (an upstream replay ingest did not catch)
    await engine.handle([upserted(offset=7)])
    assert subjects.states["customer:C-1"].journeys["welcome-call"].entries == 1


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_journey_metrics_count_what_committed_and_a_rehearsal_counts_nothing() -> None:
    entered = sample("upkeep_journey_entered_total", journey="welcome-call")
    sent = sample("upkeep_journey_steps_total", journey="welcome-call", outcome="sent")
    engine, *_ = setup(observed=False)
    await commit(await engine.handle([upserted()]))
    await commit(await engine.tick({0}))
    assert sample("upkeep_journey_entered_total", journey="welcome-call") == entered
    engine, *_ = setup()
    await commit(await engine.handle([upserted()]))
    uncommitted = await engine.tick({0})
    assert sample("upkeep_journey_entered_total", journey="welcome-call") == entered
    await commit(uncommitted)
    assert sample("upkeep_journey_entered_total", journey="welcome-call") == entered + 1
    assert sample("upkeep_journey_steps_total", journey="welcome-call", outcome="sent") == sent + 1


async def test_a_tick_redone_after_an_event_moved_the_run_publishes_what_it_had_decided() -> None:
    """A tick sends ``hello`` and does not commit; before it is redone, an order meets the
    goal. The redone tick publishes ``hello`` and ``journey.entered`` (same key, same ids);
    the run leaves as converted and sends nothing more."""
    journey = {
        **JOURNEY,
        "goal": {"event": "customer.interaction", "when": 'event.kind == "order"'},
    }
    catalog = Catalog()
    catalog.replace([Published("welcome-call", 1, validate(journey), enabled=True)], [])
    subjects, timers, clock = InMemorySubjectStore(), InMemoryTimerStore(), Clock()
    engine = RulesEngine(
        [Journeys(catalog)],
        subjects,
        timers,
        events_topic="events",
        actions_topic="actions",
        clock=clock,
    )
    await commit(await engine.handle([upserted()]))
    lost = await engine.tick({0})  # sends hello, saves the run's state, does not commit
    order = record(
        1,
        "order-1",
        "customer.interaction",
        interaction_id="I-1",
        customer_id="C-1",
        kind="order",
        occurred_at=T0.isoformat(),
    )
    await commit(await engine.handle([order]))
    clock.now = T0 + timedelta(minutes=1)
    redone = await engine.tick({0})
    await commit(redone)
    assert keys(redone) == keys(lost)
    lost_ids = {e.id for e in derived(lost)}
    assert lost_ids <= {e.id for e in derived(redone)}
    left = [e for e in derived(redone) if e.type == "upkeep.journey.left.v1"]
    assert [e.data["reason"] for e in left] == ["converted"]
    clock.now = T0 + timedelta(days=2)
    assert keys(await engine.tick({0})) == []  # the call step never comes
