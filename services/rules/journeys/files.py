"""Journeys kept in git: a directory of ``*.yaml`` / ``*.yml`` / ``*.json`` files, one journey
each, applied at the rules service's start-up (``UPKEEP_RULES_JOURNEYS_DIR``) and by ``python
-m services.rules journeys apply DIR``.

Applying is idempotent: a file whose definition equals the stored version changes nothing; a
changed one becomes the next version. ``enabled`` in a file is applied when it is there; without
it a new journey is created switched off and an existing one keeps its state (switched on or
off over the API). A file that does not validate is refused with its errors, and the others are
applied.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.rules.journeys.definition import Invalid, parse_document, validate
from services.rules.journeys.store import Conflict, JourneyStore

log = logging.getLogger(__name__)
SUFFIXES = (".yaml", ".yml", ".json")


@dataclass
class Applied:
    file: str
    name: str | None = None
    # created | updated | restored | enabled | disabled | unchanged | invalid | conflict (another
    # writer changed it at the same moment: applied by a replica that started with this one)
    outcome: str = "unchanged"
    version: int | None = None
    errors: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v or k == "outcome"}


def journey_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in SUFFIXES and p.is_file())


async def apply_directory(
    store: JourneyStore, directory: Path, by: str, template_root: Path | None = None
) -> list[Applied]:
    """Apply every journey file in ``directory``; one :class:`Applied` per file."""
    results = []
    for path in journey_files(directory):
        result = Applied(file=path.name)
        try:
            journey = validate(
                parse_document(path.read_text(encoding="utf-8"), path.name), template_root
            )
        except Invalid as exc:
            result.outcome, result.errors = "invalid", exc.errors
            log.error("journey file refused", extra={"file": path.name, "errors": exc.errors})
            results.append(result)
            continue
        try:
            published, change = await store.put(journey, by, journey.enabled)
        except Conflict:  # another replica starting at the same moment applied it
            result.name, result.outcome = journey.name, "conflict"
            results.append(result)
            continue
        result.name, result.version = published.name, published.version
        result.outcome = change.what if change is not None else "unchanged"
        results.append(result)
    return results
