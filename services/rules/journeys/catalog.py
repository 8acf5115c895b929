"""The journeys a rules replica runs: every version of every journey, and which version is
current and whether it is switched on. The service refreshes it from MongoDB every few seconds
(:mod:`services.rules.journeys.store`); the runner only reads it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from services.rules.journeys.definition import Journey
from shared.events.types import resolve_type

MAX_METRIC_JOURNEYS = 100  # journeys beyond this many are counted under journey="other"


@dataclass(frozen=True, slots=True)
class Published:
    """A journey's current version and whether it runs: what ``GET /v1/journeys/{name}``
    shows."""

    name: str
    version: int
    journey: Journey
    enabled: bool
    deleted: bool = False
    updated_at: datetime | None = None
    updated_by: str | None = None

    @property
    def running(self) -> bool:
        return self.enabled and not self.deleted


@dataclass
class Catalog:
    current: dict[str, Published] = field(default_factory=dict)
    versions: dict[tuple[str, int], Journey] = field(default_factory=dict)
    revision: int = 0  # bumped on every change (tests wait for it)
    _labelled: frozenset[str] = frozenset()  # the names counted under their own label
    sends_to_teams: bool = False  # a running journey sends to ``team:<name>`` (needs loads)

    def __post_init__(self) -> None:
        self._labelled = frozenset(sorted(self.current)[:MAX_METRIC_JOURNEYS])

    def replace(
        self, current: Iterable[Published], versions: Iterable[tuple[int, Journey]]
    ) -> None:
        """Take a new snapshot (whole: readers never see half of one)."""
        new_versions = {(j.name, v): j for v, j in versions}
        new_current = {p.name: p for p in current}
        for p in new_current.values():
            new_versions[(p.name, p.version)] = p.journey
        if new_current != self.current or new_versions.keys() != self.versions.keys():
            self.revision += 1
        self.current, self.versions = new_current, new_versions
        self._labelled = frozenset(sorted(new_current)[:MAX_METRIC_JOURNEYS])
        self.sends_to_teams = any(
            s.send is not None and s.send.to.startswith("team:")
            for p in new_current.values()
            if p.running
            for s in p.journey.steps
        )

    def version(self, name: str, version: int) -> Journey | None:
        return self.versions.get((name, version))

    def running(self, kind: str) -> list[Published]:
        return [p for p in self.current.values() if p.running and p.journey.subject == kind]

    def label(self, name: str) -> str:
        """``name`` as a metric label: the first :data:`MAX_METRIC_JOURNEYS` names by name."""
        return name if name in self._labelled else "other"


def full_type(name: str) -> str:
    """A short or full event type name as the full one (``channel.order`` →
    ``upkeep.channel.order.v1``)."""
    model = resolve_type(name)
    return model.type_name if model is not None else name
