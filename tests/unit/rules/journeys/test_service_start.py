"""The journeys' start-up: the journey files applied and the catalogue read, with every log
line it writes made (INFO), and the counters of each journey exported before first use."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from fastapi import APIRouter
from prometheus_client import REGISTRY

from services.rules.journeys.catalog import Catalog
from services.rules.journeys.service import JourneysPart
from services.rules.journeys.store import InMemoryJourneyStore
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
