"""The journeys' figures (:class:`JourneyFigures`): per journey, the runs that entered and left
(by reason, per version) and the conversion rate, from the counters of its buckets; per step,
in the order steps were first seen, its completions and outcomes, and the runs waiting at it now,
from the runs read model.

Without a window the counters come from the journey's all-time bucket (``total``); with one,
from its day buckets in the window (a run that entered before the window and converted in it
counts as converted, not as entered, as the report's other rates do).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from services.analytics import journeys
from services.analytics.aggregates import ALL_TIME, TOTAL, Aggregates, totals
from services.analytics.journeys import START, Journey, Totals
from services.analytics.readmodels import Journeys

DIM = "journey"


class JourneyTotals(BaseModel):
    entered: int = Field(description="runs that entered")
    left: int = Field(description="runs that left, for any reason")
    completed: int = Field(description="runs that went through every step")
    converted: int = Field(description="runs that met the journey's goal")
    exited: int = Field(description="runs that met an exit condition or an exit step")
    disabled: int = Field(description="runs ended because the journey was switched off")
    ended_by_update: int = Field(description="runs whose step a new version no longer has")
    conversion_rate: float | None = Field(description="converted / entered")

    @classmethod
    def values(cls, found: Totals) -> dict[str, int | float | None]:
        return {
            "entered": found.entered,
            "left": sum(found.left.values()),
            **found.left,
            "conversion_rate": found.conversion_rate,
        }


class JourneyVersion(JourneyTotals):
    version: int


class JourneySummary(JourneyTotals):
    journey: str
    active: int = Field(description="runs in the journey now: at a step or at its start")


class JourneyStep(BaseModel):
    step: str
    kind: str | None = Field(description="send, wait, wait_for, branch, set, emit or exit")
    completed: int = Field(description="times a run completed the step")
    sent: int = Field(description="completions that sent a message (outcome sent)")
    unrouted: int = Field(description="sends that found no way to reach anyone")
    outcomes: dict[str, int] = Field(description="completions by outcome")
    waiting: int = Field(description="runs at the step now")


class JourneyDetail(JourneySummary):
    since: datetime | None = Field(description="the window's start; none: all time")
    until: datetime | None
    waiting_at_start: int = Field(description=f"runs that entered and wait at {START!r} now")
    versions: list[JourneyVersion]
    steps: list[JourneyStep] = Field(description="in the order the steps were first seen")


@dataclass(frozen=True)
class JourneyFigures:
    """The journeys' counters (``aggregates``, dimension ``journey``) and runs (``runs``)."""

    aggregates: Aggregates
    runs: Journeys

    async def counters(
        self, since: datetime | None, until: datetime | None, name: str | None = None
    ) -> dict[str, dict[str, int]]:
        """Each journey's counters (of one with ``name``) in ``[since, until)``; all time
        without a window."""
        if since is None or until is None:
            rows = await self.aggregates.series(
                TOTAL, DIM, ALL_TIME, ALL_TIME + timedelta(seconds=1), name
            )
        else:
            rows = await self.aggregates.series("day", DIM, since, until, name)
        grouped: dict[str, list[Mapping[str, Any]]] = {}
        for row in rows:
            grouped.setdefault(row["value"], []).append(row)
        return {value: totals(found) for value, found in grouped.items()}

    async def summaries(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[JourneySummary]:
        """Every journey seen, by name (``since`` and ``until`` both or neither)."""
        counters = await self.counters(since, until)
        return [
            JourneySummary(
                journey=j.name,
                active=await self.runs.active(j.name),
                **JourneyTotals.values(journeys.totals(counters.get(j.name, {}))),
            )
            for j in await self.runs.known()
        ]

    async def detail(
        self, name: str, since: datetime | None = None, until: datetime | None = None
    ) -> JourneyDetail | None:
        """One journey's totals, versions and steps; None for a journey never seen."""
        journey = await self.runs.get(name)
        if journey is None:
            return None
        counters = (await self.counters(since, until, name)).get(name, {})
        waiting = await self.runs.waiting(name, [START, *journey.steps])
        return JourneyDetail(
            journey=name,
            active=await self.runs.active(name),
            since=since,
            until=until,
            waiting_at_start=waiting[START],
            versions=[
                JourneyVersion(version=v, **JourneyTotals.values(t))
                for v, t in journeys.by_version(counters).items()
            ],
            steps=_steps(journey, counters, waiting),
            **JourneyTotals.values(journeys.totals(counters)),
        )


def _steps(
    journey: Journey, counters: Mapping[str, int], waiting: Mapping[str, int]
) -> list[JourneyStep]:
    figures = journeys.by_step(counters)
    rows = []
    for step in journey.steps:
        found = figures.get(step) or journeys.StepFigures(0, dict.fromkeys(journeys.OUTCOMES, 0))
        rows.append(
            JourneyStep(
                step=step,
                kind=journey.kinds.get(step),
                completed=found.completed,
                sent=found.outcomes.get("sent", 0),
                unrouted=found.outcomes.get("unrouted", 0),
                outcomes=found.outcomes,
                waiting=waiting.get(step, 0),
            )
        )
    return rows
