"""The CloudEvents 1.0 envelope as Upkeep publishes it on ``upkeep.events.v1``.

Canonical events are structured-mode JSON::

    {"specversion": "1.0", "id": "...", "source": "crm", "type": "upkeep.customer.upserted.v1",
     "subject": "customer:C-1", "time": "2026-11-22T02:00:00Z", "datacontenttype":
     "application/json", "dataschema": "urn:upkeep:schema:upkeep.customer.upserted.v1",
     "partitionkey": "customer:C-1", "sourceoffset": "+08:00", "data": {...}}

``time`` is UTC; ``sourceoffset`` (an extension) keeps the UTC offset the producer wrote it in.
``partitionkey`` is the CloudEvents partitioning extension and equals the Kafka key.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.events.types import EventPayload, resolve_type

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
SCHEMA_PREFIX = "urn:upkeep:schema:"
EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as every canonical timestamp is written."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class CanonicalEvent(BaseModel):
    """A validated event as it travels on the canonical topic."""

    model_config = ConfigDict(frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=512)
    type: str
    subject: str
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str | None = None
    partitionkey: str | None = None
    sourceoffset: str | None = None
    data: dict[str, Any]

    @field_validator("time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("canonical time must carry an offset")
        return value.astimezone(UTC)

    @classmethod
    def build(
        cls,
        *,
        event_id: str,
        source: str,
        payload: EventPayload,
        time: datetime,
        source_offset: str | None,
    ) -> CanonicalEvent:
        subject = payload.subject()
        return cls(
            id=event_id,
            source=source,
            type=payload.type_name,
            subject=subject,
            time=time,
            dataschema=SCHEMA_PREFIX + payload.type_name,
            partitionkey=subject,
            sourceoffset=source_offset,
            data=payload.model_dump(mode="json", exclude_none=True),
        )

    @property
    def dedup_key(self) -> str:
        """CloudEvents identity: ``id`` is unique within ``source``."""
        return f"{self.source}\x1f{self.id}"

    def payload(self) -> EventPayload:
        """The typed payload (raises ``KeyError`` for a type this build does not know)."""
        model = resolve_type(self.type)
        if model is None:
            raise KeyError(self.type)
        return model.model_validate(self.data)

    def to_json(self) -> bytes:
        body = self.model_dump(mode="json", exclude_none=True)
        body["time"] = format_time(self.time)
        return orjson.dumps(body)

    @classmethod
    def from_json(cls, raw: bytes | str) -> CanonicalEvent:
        return cls.model_validate_json(raw)
