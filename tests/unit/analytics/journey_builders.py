"""Journey events, the records that carry them, and an analytics handler over in-memory
collections (tests/unit/analytics/memory_mongo.py) for the tests of the journeys' counters, runs
and figures (test_journeys.py, test_journey_handler.py, test_journeys_api.py,
test_dashboard.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from pymongo.asynchronous.collection import AsyncCollection

from services.analytics.aggregates import Aggregates
from services.analytics.conversions import Conversions
from services.analytics.funnels import JourneyFigures
from services.analytics.handler import AnalyticsHandler
from services.analytics.readmodels import MongoJourneys
from shared.events.envelope import CanonicalEvent
from shared.kafka.messages import HandlerResult, StoredRecord
from shared.settings import TopicSettings
from tests.unit.analytics.fact_builders import T, event
from tests.unit.analytics.memory_mongo import MemoryCollection
from tests.unit.analytics.people_fakes import FakeRevisits, FakeSubjects, FakeTasks

TOPICS = TopicSettings()
M = timedelta(minutes=1)


def run_ids(run: str, journey: str = "onboarding", version: int = 1) -> dict[str, Any]:
    return {"about": f"customer:C-{run}", "journey": journey, "version": version, "run": run}


def entered(run: str, at: datetime = T, **ids: Any) -> CanonicalEvent:
    body = {**run_ids(run, **ids), "trigger": "upkeep.customer.upserted.v1"}
    return event(
        "journey.entered", f"{run}:entered", "rules", at, **body, entered_at=at.isoformat()
    )


def step(
    run: str,
    name: str,
    kind: str,
    outcome: str,
    next_step: str | None,
    at: datetime = T,
    **ids: Any,
) -> CanonicalEvent:
    body: dict[str, Any] = {**run_ids(run, **ids), "step": name, "kind": kind, "outcome": outcome}
    if next_step is not None:
        body["next_step"] = next_step
    if kind == "send" and outcome == "sent":
        body["action_key"] = f"journey:{run}:{name}"
    return event(
        "journey.step_completed",
        f"{run}:{name}:{outcome}:{at.isoformat()}",
        "rules",
        at,
        **body,
        completed_at=at.isoformat(),
    )


def left(
    run: str, reason: str, last_step: str | None, at: datetime = T, **ids: Any
) -> CanonicalEvent:
    body: dict[str, Any] = {**run_ids(run, **ids), "reason": reason}
    if last_step is not None:
        body["last_step"] = last_step
    return event("journey.left", f"{run}:left", "rules", at, **body, left_at=at.isoformat())


def onboarding() -> list[CanonicalEvent]:
    """Five runs of "onboarding": welcome (send) → wait-3d (wait) → check (branch) → call
    (send); the goal met by R4; R5 follows version 2 and exits."""
    d3 = T + timedelta(days=3)
    return [
        # R1 goes through every step; its call finds no way to reach anyone
        entered("1"),
        step("1", "welcome", "send", "sent", "wait-3d"),
        step("1", "wait-3d", "wait", "waited", "check", d3),
        step("1", "check", "branch", "then", "call", d3),
        step("1", "call", "send", "unrouted", None, d3),
        left("1", "completed", "call", d3),
        # R2 waits three days; R3 entered, no step yet
        entered("2", T + M),
        step("2", "welcome", "send", "sent", "wait-3d", T + M),
        entered("3", T + 2 * M),
        # R4 meets the goal while it waits
        entered("4", T + 3 * M),
        step("4", "welcome", "send", "sent", "wait-3d", T + 3 * M),
        left("4", "converted", "wait-3d", T + timedelta(days=1)),
        # R5, version 2: the branch goes the other way, to an exit step
        entered("5", T + 4 * M, version=2),
        step("5", "welcome", "send", "sent", "wait-3d", T + 4 * M, version=2),
        step("5", "wait-3d", "wait", "waited", "check", d3 + 4 * M, version=2),
        step("5", "check", "branch", "else", "bye", d3 + 4 * M, version=2),
        step("5", "bye", "exit", "exited", None, d3 + 4 * M, version=2),
        left("5", "exited", "bye", d3 + 4 * M, version=2),
    ]


def records(events: Sequence[CanonicalEvent], first: int = 0, partition: int = 0) -> list[Any]:
    """The events as consecutive records of one partition of the events topic."""
    return [
        StoredRecord(TOPICS.events, partition, first + n, e.to_json()) for n, e in enumerate(events)
    ]


def collection(memory: MemoryCollection) -> AsyncCollection[dict[str, Any]]:
    return cast(AsyncCollection[dict[str, Any]], memory)


@dataclass
class World:
    """Analytics' handler over in-memory collections, and the journeys' figures it keeps."""

    facts: MemoryCollection = field(default_factory=lambda: MemoryCollection("analytics_facts"))
    buckets: MemoryCollection = field(default_factory=lambda: MemoryCollection("analytics_buckets"))
    journeys: MemoryCollection = field(
        default_factory=lambda: MemoryCollection("analytics_journeys")
    )
    runs: MemoryCollection = field(
        default_factory=lambda: MemoryCollection("analytics_journey_runs")
    )

    def __post_init__(self) -> None:
        self.aggregates = Aggregates(collection(self.facts), collection(self.buckets))
        self.store = MongoJourneys(collection(self.journeys), collection(self.runs))
        self.handler = AnalyticsHandler(
            self.aggregates,
            FakeSubjects(),
            Conversions(collection(MemoryCollection("analytics_contracts"))),
            FakeTasks(),
            FakeRevisits(),
            TOPICS,
            self.store,
        )
        self.figures = JourneyFigures(self.aggregates, self.store)

    async def handle(self, batch: Sequence[Any], size: int = 4) -> list[HandlerResult]:
        """The records in batches of ``size``, as the consumer loop hands them over."""
        return [await self.handler.handle(batch[i : i + size]) for i in range(0, len(batch), size)]

    def state(self) -> list[list[dict[str, Any]]]:
        """Everything written: claims (without when they were claimed), buckets, journeys,
        runs."""
        claims = [{k: v for k, v in d.items() if k != "claimed_at"} for d in self.facts.snapshot()]
        return [claims, self.buckets.snapshot(), self.journeys.snapshot(), self.runs.snapshot()]
