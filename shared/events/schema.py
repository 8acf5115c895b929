"""Generates the JSON Schema documents of the event contract from the models.

``python -m shared.events.schema docs/schemas`` (re)writes one file per event type plus the
envelope, and the schema of a journey document (``journey.v1.json``); ``--check`` exits 1 if the
files on disk differ from the models.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from shared.events.actions import ACTION_TYPE, ActionMessage
from shared.events.deliveries import DELIVERY_TYPE, DeliveryMessage
from shared.events.envelope import SCHEMA_PREFIX, envelope_adapter
from shared.events.types import EVENT_TYPES


def schema_documents() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, for the envelope and every registered event type."""
    docs: dict[str, dict[str, Any]] = {}
    envelope = envelope_adapter().json_schema()
    envelope["$id"] = SCHEMA_PREFIX + "envelope"
    envelope["title"] = "Upkeep canonical CloudEvent"
    docs["envelope.json"] = envelope
    action = ActionMessage.model_json_schema()
    action["$id"] = SCHEMA_PREFIX + ACTION_TYPE
    action["title"] = ACTION_TYPE
    docs[f"{ACTION_TYPE}.json"] = action
    delivery = DeliveryMessage.model_json_schema()
    delivery["$id"] = SCHEMA_PREFIX + DELIVERY_TYPE
    delivery["title"] = DELIVERY_TYPE
    docs[f"{DELIVERY_TYPE}.json"] = delivery
    for name, model in sorted(EVENT_TYPES.items()):
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = SCHEMA_PREFIX + name
        schema["title"] = name
        docs[f"{name}.json"] = schema
    return docs


JOURNEY_SCHEMA = "journey.v1.json"


def other_documents() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, for the documents that are not messages: a journey
    definition (``docs/journeys.md``), whose model is the rules service's."""
    # imported here, not at the top: the event contract itself needs nothing of the services
    from services.rules.journeys.definition import schema as journey_schema

    return {JOURNEY_SCHEMA: journey_schema()}


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for file_name, document in {**schema_documents(), **other_documents()}.items():
        path = args.directory / file_name
        text = render(document)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(file_name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        sys.stderr.write(f"stale schemas (run make schemas): {', '.join(stale)}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
