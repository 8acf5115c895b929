"""Journeys as analytics reads them: the runs read model, the order of a journey's steps, and
the funnel's figures from the counters. Pure, no I/O.

The rules service reports every run of a journey (an operator-defined flow) with three events
about the run's subject: ``upkeep.journey.entered.v1``, ``upkeep.journey.step_completed.v1``
(``next_step``: where the run is now; none: it is leaving) and ``upkeep.journey.left.v1``
(``reason``). Their counters are facts like any other
(:func:`services.analytics.facts.journey_facts`, one per event id, in the journey's buckets
only); what is *now* — where each run waits — is folded here.

**Runs.** One :class:`Run` per journey and run id. Each field is a join, so the fold is
idempotent and order-free — the same event read twice, or a run's events in any order, give the
same run: the entry is the earliest, the current step is the ``next_step`` of the step event of
the latest record (:attr:`Seen.record`), the leave is the first. An event is folded at the record
that first carried it (the handler passes only the events whose claim is their record's), so a
copy published again later does not move a run back to a step it has left. A run
that entered and has no step event yet waits at :data:`START`; a run that left waits nowhere.

**Steps.** A journey's steps are listed in the order they were first seen
(:attr:`Seen.first_seen`: by time, then record) in a step event — as the step it completed, or,
just after it, as the step the run went on to — kept with ``$min``, so the same whichever record
is read first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import get_args

from services.analytics.people import ms
from shared.events.types import (
    JourneyEntered,
    JourneyLeft,
    JourneyStepCompleted,
    LeaveReason,
    StepOutcome,
)

JourneyEvent = JourneyEntered | JourneyStepCompleted | JourneyLeft
JOURNEY_EVENTS = (JourneyEntered, JourneyStepCompleted, JourneyLeft)
START = "(start)"  # where a run that entered and completed no step yet waits
LEAVE_REASONS: tuple[str, ...] = get_args(LeaveReason)
OUTCOMES: tuple[str, ...] = get_args(StepOutcome)
PREFIX = "journeys."  # the journeys' counters; in the buckets of dimension "journey" only


@dataclass(frozen=True, slots=True)
class Seen:
    """Where a journey event was read: the record that first carried it (``partition``,
    ``offset``) and the event's time (``at``)."""

    partition: int
    offset: int
    at: datetime

    @property
    def record(self) -> str:
        """The order among one run's events, as a text that sorts the same way: the record's.
        A run's events are all about one subject, so on one partition, in the order they were
        published — not always the order of their times (a timer that fires late completes its
        step at its due time)."""
        return f"{self.partition:05d}|{self.offset:020d}"

    @property
    def first_seen(self) -> str:
        """The order among all of a journey's events, which are on many partitions: the time,
        then the record."""
        return f"{self.at.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%f}|{self.record}"


def run_key(journey: str, run: str) -> str:
    return f"{journey}/{run}"  # a journey's name has no "/"


@dataclass(frozen=True, slots=True)
class Run:
    journey: str
    run: str
    about: str
    version: int
    entered_at: datetime | None = None
    step_record: str | None = None  # the record of the latest step event (Seen.record)
    last_completed: str | None = None  # the step it completed
    at_step: str | None = None  # where it sent the run (None: leaving)
    left_record: str | None = None  # the record of the (first) leave
    left_reason: str | None = None
    left_at: datetime | None = None
    last_step: str | None = None

    @property
    def waiting_at(self) -> str | None:
        """The step the run waits at now; None once it left (or is leaving)."""
        if self.left_reason is not None:
            return None
        if self.step_record is not None:
            return self.at_step
        return START if self.entered_at is not None else None


def fold(run: Run | None, event: JourneyEvent, seen: Seen) -> Run:
    """The run after one of its events, read where ``seen`` says."""
    place = seen.record
    r = run or Run(event.journey, event.run, event.about, event.version)
    if event.version > r.version:
        r = replace(r, version=event.version)
    if isinstance(event, JourneyEntered):
        at = ms(event.entered_at)
        if r.entered_at is None or at < r.entered_at:
            r = replace(r, entered_at=at)
    elif isinstance(event, JourneyStepCompleted):
        if r.step_record is None or place > r.step_record:
            r = replace(r, step_record=place, last_completed=event.step, at_step=event.next_step)
    elif r.left_record is None or place < r.left_record:
        r = replace(
            r,
            left_record=place,
            left_reason=event.reason,
            left_at=ms(event.left_at),
            last_step=event.last_step,
        )
    return r


def fold_all(
    runs: Mapping[str, Run], events: Iterable[tuple[JourneyEvent, Seen]]
) -> dict[str, Run]:
    """The runs (by :func:`run_key`) after the events and where they were read; ``runs`` is
    not changed."""
    found = dict(runs)
    for event, seen in events:
        key = run_key(event.journey, event.run)
        found[key] = fold(found.get(key), event, seen)
    return found


@dataclass(frozen=True, slots=True)
class Sightings:
    """What a batch shows of one journey's steps: the first position of each (``steps``), and
    the first position of each as a completed step with its kind (``kinds``: ``<pos>|<kind>``).
    Each is the minimum of what it saw, so merging batches with ``$min`` is order-free."""

    first: str
    steps: dict[str, str]
    kinds: dict[str, str]


def sightings(events: Iterable[tuple[JourneyEvent, Seen]]) -> dict[str, Sightings]:
    found: dict[str, Sightings] = {}

    def least(into: dict[str, str], key: str, value: str) -> None:
        if key not in into or value < into[key]:
            into[key] = value

    for event, where in events:
        place = where.first_seen
        seen = found.get(event.journey) or Sightings(place, {}, {})
        seen = replace(seen, first=min(seen.first, place))
        if isinstance(event, JourneyStepCompleted):
            least(seen.steps, event.step, f"{place}|0")
            least(seen.kinds, event.step, f"{place}|{event.kind}")
            if event.next_step is not None:  # named just after the step that led there
                least(seen.steps, event.next_step, f"{place}|1")
        found[event.journey] = seen
    return found


@dataclass(frozen=True, slots=True)
class Journey:
    """A journey as seen so far: its steps in the order they were first seen, their kinds."""

    name: str
    steps: tuple[str, ...] = ()
    kinds: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, steps: Mapping[str, str], kinds: Mapping[str, str]) -> Journey:
        order = sorted(steps, key=lambda s: (steps[s], s))
        return cls(name, tuple(order), {s: k.rsplit("|", 1)[1] for s, k in kinds.items()})


# --- figures from the counters -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Totals:
    """Runs that entered, and that left by each reason."""

    entered: int
    left: dict[str, int]

    @property
    def converted(self) -> int:
        return self.left.get("converted", 0)

    @property
    def conversion_rate(self) -> float | None:
        return round(self.converted / self.entered, 4) if self.entered else None


@dataclass(frozen=True, slots=True)
class StepFigures:
    completed: int
    outcomes: dict[str, int]


def entry_counters(version: int) -> dict[str, int]:
    return {f"{PREFIX}entered": 1, f"{PREFIX}version.{version}.entered": 1}


def leave_counters(version: int, reason: str) -> dict[str, int]:
    return {
        f"{PREFIX}left": 1,
        f"{PREFIX}left.{reason}": 1,
        f"{PREFIX}version.{version}.left.{reason}": 1,
    }


def step_counters(step: str, outcome: str) -> dict[str, int]:
    return {f"{PREFIX}steps.{step}.completed": 1, f"{PREFIX}steps.{step}.{outcome}": 1}


def totals(counters: Mapping[str, int]) -> Totals:
    """A journey's (all versions together)."""
    return Totals(
        counters.get(f"{PREFIX}entered", 0),
        {r: counters.get(f"{PREFIX}left.{r}", 0) for r in LEAVE_REASONS},
    )


def by_version(counters: Mapping[str, int]) -> dict[int, Totals]:
    """Each version's totals, the oldest version first."""
    prefix = f"{PREFIX}version."
    versions = {
        int(name.removeprefix(prefix).split(".", 1)[0])
        for name in counters
        if name.startswith(prefix) and name.removeprefix(prefix).split(".", 1)[0].isdigit()
    }
    found = {}
    for v in sorted(versions):
        mine = f"{prefix}{v}."
        found[v] = Totals(
            counters.get(f"{mine}entered", 0),
            {r: counters.get(f"{mine}left.{r}", 0) for r in LEAVE_REASONS},
        )
    return found


def by_step(counters: Mapping[str, int]) -> dict[str, StepFigures]:
    """Each step's completions and outcomes (every outcome, 0 when none)."""
    prefix = f"{PREFIX}steps."
    steps = {n.removeprefix(prefix).split(".", 1)[0] for n in counters if n.startswith(prefix)}
    return {
        step: StepFigures(
            counters.get(f"{prefix}{step}.completed", 0),
            {o: counters.get(f"{prefix}{step}.{o}", 0) for o in OUTCOMES},
        )
        for step in sorted(steps)
    }
