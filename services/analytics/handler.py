"""The batch handler: records of the three topics in, exact aggregates and read models out (see
:mod:`services.analytics.aggregates` and :mod:`services.analytics.readmodels` for why they are
exact)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from prometheus_client import Counter

from services.analytics.aggregates import Aggregates, Attribution, Placed
from services.analytics.budgets import Budgets
from services.analytics.conversions import Conversions
from services.analytics.facts import Touch, Unreadable, read
from services.analytics.journeys import JourneyEvent, Seen
from services.analytics.people import Revisit, TaskEvent
from services.analytics.readmodels import Journeys, Revisits, Tasks
from services.analytics.staff import Directory
from shared.events.types import BudgetSet, StaffUpserted
from shared.kafka.messages import DeadLetter, HandlerResult, Record
from shared.metrics import preinit
from shared.settings import TopicSettings

FACTS = Counter(
    "upkeep_analytics_facts_total",
    "Facts read, by result (counted; repeat: already counted from this or another record).",
    ["result"],
)
preinit(FACTS, [("counted",), ("repeat",)])


class AnalyticsHandler:
    def __init__(
        self,
        aggregates: Aggregates,
        attribution: Attribution,
        conversions: Conversions,
        tasks: Tasks,
        revisits: Revisits,
        topics: TopicSettings,
        journeys: Journeys | None = None,
        staff: Directory | None = None,
        budgets: Budgets | None = None,
    ) -> None:
        self._aggregates, self._attribution = aggregates, attribution
        self._conversions, self._tasks, self._revisits = conversions, tasks, revisits
        self._journeys, self._staff, self._budgets = journeys, staff, budgets
        self._kinds = {
            topics.events: "events",
            topics.actions: "actions",
            topics.deliveries: "deliveries",
        }

    async def handle(self, records: Sequence[Record]) -> HandlerResult:
        result = HandlerResult()
        placed: list[Placed] = []
        touches: list[tuple[Touch, Placed]] = []
        changes: dict[str, dict[str, str]] = {}
        task_events: list[TaskEvent] = []
        statuses: list[Revisit] = []
        journey_events: list[tuple[JourneyEvent, Placed]] = []
        budgets: list[BudgetSet] = []
        profiles: list[tuple[StaffUpserted, datetime]] = []
        tz = self._aggregates.timezone
        for record in records:
            kind = self._kinds.get(record.topic)
            if kind is None:
                continue
            try:
                found = read(kind, record.value, tz)
            except Unreadable as exc:
                result.dead_letters.append(DeadLetter(record, "invalid_message", str(exc)))
                continue
            if found.attribution is not None:
                subject, dims = found.attribution
                changes.setdefault(subject, {}).update(dims)
            placed += [
                Placed(f, record.topic, record.partition, record.offset) for f in found.facts
            ]
            if found.touch is not None:
                here = Placed(found.facts[0], record.topic, record.partition, record.offset)
                touches.append((found.touch, here))
            if found.task is not None:
                task_events.append(found.task)
            if found.revisit is not None:
                statuses.append(found.revisit)
            if found.budget is not None:
                budgets.append(found.budget)
            if found.staff is not None:
                profiles.append(found.staff)
            if found.journey is not None:
                payload, identity = found.journey
                fact = next(f for f in found.facts if f.identity == identity)
                journey_events.append(
                    (payload, Placed(fact, record.topic, record.partition, record.offset))
                )
        await self._attribution.update(changes)  # before the facts: an event attributes itself
        if self._staff is not None:  # and a profile its owner's team
            await self._staff.apply(profiles)
        if self._budgets is not None:
            await self._budgets.apply(budgets)
        applied = await self._tasks.apply(task_events)  # and a task (its completion names no
        # owner: its owner and team are the read model's)
        await self._revisits.apply(statuses)
        placed += await self._conversions.record(touches)
        subjects = {p.fact.subject for p in placed if p.fact.subject}
        wanted = {s.removeprefix("task:") for s in subjects if s.startswith("task:")}
        tasks = {k: t for k, t in applied.items() if k in wanted}
        tasks |= await self._tasks.get(wanted - tasks.keys())  # read only those not just written
        known = await self._attribution.get(subjects | {t.about for t in tasks.values()})
        for subject in subjects:
            if subject.startswith("staff:"):  # a colleague's own messages are theirs
                known.setdefault(subject, {})["owner"] = subject.removeprefix("staff:")
        for task_id, task in tasks.items():  # the task's subject's, then its owner and team
            dims = {**known.get(task.about, {}), "owner": task.owner or "", "team": task.team or ""}
            known[f"task:{task_id}"] = {k: v for k, v in dims.items() if v}
        await self._add_teams(known)
        applied_facts = await self._aggregates.count(placed, known)
        if self._journeys is not None and journey_events:
            # a run moves only by an event read from the record that first carried it: a copy
            # published again later (its claim is the first record's) must not move it back
            mine = {(p.fact.identity, p.partition, p.offset) for p in applied_facts}
            await self._journeys.apply(
                [
                    (event, Seen(p.partition, p.offset, p.fact.at))
                    for event, p in journey_events
                    if (p.fact.identity, p.partition, p.offset) in mine
                ]
            )
        counted = len(applied_facts)
        repeats = len({p.fact.identity for p in placed}) - counted
        result.after_commit.append(lambda: FACTS.labels("counted").inc(counted))
        result.after_commit.append(lambda: FACTS.labels("repeat").inc(repeats))
        return result

    async def _add_teams(self, known: dict[str, dict[str, str]]) -> None:
        """A subject whose owner is known and whose team is not: the owner's team now (so the
        figures of each team, its revenue and cost too, are its owners')."""
        if self._staff is None:
            return
        owners = {d["owner"] for d in known.values() if d.get("owner") and not d.get("team")}
        teams = {s: m.team for s, m in (await self._staff.get(owners)).items() if m.team}
        for dims in known.values():
            team = teams.get(dims.get("owner", ""))
            if team and not dims.get("team"):
                dims["team"] = team
