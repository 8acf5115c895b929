"""The journeys' start-up: the journey files applied and the catalogue read, with every log
line it writes made (INFO), and the counters of each journey exported before first use."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter
from prometheus_client import REGISTRY

from services.rules.journeys.catalog import Catalog, Published
from services.rules.journeys.definition import Journey, parse_document, validate
from services.rules.journeys.files import apply_directory
from services.rules.journeys.runner import Journeys
from services.rules.journeys.service import JourneysPart
from services.rules.journeys.store import Conflict, InMemoryJourneyStore
from services.rules.settings import DEFAULT_JOURNEYS_DIR, RulesSettings


async def test_start_up_applies_the_files_reads_the_catalogue_and_logs_at_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for path in DEFAULT_JOURNEYS_DIR.glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "broken.yaml").write_text("name: broken\nsubject: nobody\n", encoding="utf-8")
    store, catalog = InMemoryJourneyStore(), Catalog()
    part = JourneysPart(store, catalog, APIRouter(), RulesSettings(journeys_dir=tmp_path), 1.0)
    caplog.set_level(logging.INFO)
    await part._first_load()
    assert sorted(catalog.current) == [
        "a-tier-quarterly-review",
        "churn-win-back",
        "distributor-onboarding",
    ]
    assert not any(p.enabled for p in catalog.current.values())  # shipped switched off
    applied = [r for r in caplog.records if r.getMessage() == "journey file applied"]
    assert len(applied) == 4
    assert {getattr(r, "journey_outcome", None) for r in applied} == {"created", "invalid"}
    labels = {"journey": "churn-win-back", "outcome": "sent"}
    assert REGISTRY.get_sample_value("upkeep_journey_steps_total", labels) is not None


def test_a_stored_journey_that_no_longer_validates_is_skipped_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from datetime import UTC, datetime

    from services.rules.journeys.store import _published

    good = validate(parse_document((DEFAULT_JOURNEYS_DIR / "churn-win-back.yaml").read_text()))
    doc = {
        "_id": "churn-win-back",
        "version": 2,
        "enabled": True,
        "deleted": False,
        "definition": good.definition(),
        "updated_at": datetime.now(UTC),
        "updated_by": "ops",
    }
    published = _published(doc)
    assert published is not None
    assert published.journey == good
    broken = {**doc, "_id": "hand-edited", "definition": {**good.definition(), "steps": []}}
    assert _published(broken) is None
    assert "stored journey does not validate; skipped" in caplog.text


class RacingStore(InMemoryJourneyStore):
    """Another replica writes every journey between this one's read and its write."""

    async def put(self, journey: Journey, by: str, enabled: bool | None = None) -> Any:
        raise Conflict(f"{journey.name} changed meanwhile")


async def test_replicas_starting_together_do_not_fail_on_each_others_apply(
    tmp_path: Path,
) -> None:
    for path in DEFAULT_JOURNEYS_DIR.glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    results = await apply_directory(RacingStore(), tmp_path, "file:journeys")
    assert [r.outcome for r in results] == ["conflict"] * 3


def test_the_loads_are_read_only_while_a_running_journey_sends_to_a_team() -> None:
    team_send = {
        "id": "call",
        "send": {
            "kind": "task",
            "to": "team:east",
            "message": {"en": {"subject": "Call", "body": "x"}},
        },
    }
    owner_send = {
        "id": "call",
        "send": {
            "kind": "task",
            "to": "owner",
            "message": {"en": {"subject": "Call", "body": "x"}},
        },
    }

    def journey(step: dict[str, Any]) -> Journey:
        return validate(
            {
                "name": "j",
                "subject": "customer",
                "trigger": {"event": "customer.upserted"},
                "steps": [step],
            }
        )

    rule = Journeys()
    assert not rule.uses_roster
    rule.catalog.replace([Published("j", 1, journey(owner_send), enabled=True)], [])
    assert not rule.uses_roster
    rule.catalog.replace([Published("j", 2, journey(team_send), enabled=False)], [])
    assert not rule.uses_roster  # switched off
    rule.catalog.replace([Published("j", 2, journey(team_send), enabled=True)], [])
    assert rule.uses_roster
    assert rule.catalog.label("j") == "j"
    assert rule.catalog.label("never-stored") == "other"
