"""shared/events/schema.py: the committed JSON Schemas match the models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from services.rules.journeys.definition import SCHEMA_ID
from services.rules.journeys.definition import schema as journey_schema
from shared.events.schema import JOURNEY_SCHEMA, main, other_documents, render, schema_documents
from shared.events.types import EVENT_TYPES

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "docs" / "schemas"


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(COMMITTED, target)
    return target


def test_committed_schemas_are_up_to_date() -> None:
    assert main([str(COMMITTED), "--check"]) == 0


def test_there_is_one_document_per_event_type_plus_envelope_action_and_delivery() -> None:
    names = set(schema_documents())
    extra = {"envelope.json", "upkeep.action.v1.json", "upkeep.delivery.v1.json"}
    assert names == {f"{t}.json" for t in EVENT_TYPES} | extra
    assert names <= {p.name for p in COMMITTED.glob("*.json")}


def test_modified_schema_is_detected_as_stale(
    copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = copy / "upkeep.customer.upserted.v1.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    document["title"] = "edited by hand"
    path.write_text(render(document), encoding="utf-8")
    assert main([str(copy), "--check"]) == 1
    assert "upkeep.customer.upserted.v1.json" in capsys.readouterr().err


def test_missing_schema_is_detected_as_stale(copy: Path) -> None:
    (copy / "envelope.json").unlink()
    assert main([str(copy), "--check"]) == 1


def test_whitespace_change_is_detected_as_stale(copy: Path) -> None:
    path = copy / "upkeep.channel.order.v1.json"
    path.write_text(path.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert main([str(copy), "--check"]) == 1


def test_writing_regenerates_what_check_accepts(tmp_path: Path) -> None:
    target = tmp_path / "fresh"
    assert main([str(target), "--check"]) == 1
    assert main([str(target)]) == 0
    assert main([str(target), "--check"]) == 0
    for name in [*schema_documents(), *other_documents()]:
        assert (target / name).read_text(encoding="utf-8") == (COMMITTED / name).read_text(
            encoding="utf-8"
        )


def test_the_journey_schema_is_committed_as_its_model_generates_it() -> None:
    assert set(other_documents()) == {JOURNEY_SCHEMA} == {"journey.v1.json"}
    committed = (COMMITTED / JOURNEY_SCHEMA).read_text(encoding="utf-8")
    assert committed == render(journey_schema())
    document = json.loads(committed)
    assert (document["$id"], document["title"]) == (SCHEMA_ID, "Upkeep journey")


def test_a_missing_or_edited_journey_schema_is_stale(
    copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = copy / JOURNEY_SCHEMA
    document = json.loads(path.read_text(encoding="utf-8"))
    del document["properties"]["on_update"]
    path.write_text(render(document), encoding="utf-8")
    assert main([str(copy), "--check"]) == 1
    assert JOURNEY_SCHEMA in capsys.readouterr().err
    path.unlink()
    assert main([str(copy), "--check"]) == 1


def test_schemas_carry_ids_and_titles() -> None:
    for name, document in schema_documents().items():
        stem = name.removesuffix(".json")
        assert document["$id"] == f"urn:upkeep:schema:{stem}"
        if stem != "envelope":
            assert document["title"] == stem
            assert document["additionalProperties"] is False
