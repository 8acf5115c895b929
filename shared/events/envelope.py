"""The CloudEvents 1.0 envelope as Upkeep publishes it on ``upkeep.events.v1``.

Canonical events are structured-mode JSON::

    {"specversion": "1.0", "id": "...", "source": "crm", "type": "upkeep.customer.upserted.v1",
     "subject": "customer:C-1", "time": "2026-11-22T02:00:00Z", "datacontenttype":
     "application/json", "dataschema": "urn:upkeep:schema:upkeep.customer.upserted.v1",
     "partitionkey": "customer:C-1", "sourceoffset": "+08:00", "data": {...}}

``time`` is UTC; ``sourceoffset`` (an extension) keeps the UTC offset the producer wrote it in.
``partitionkey`` is the CloudEvents partitioning extension and equals the Kafka key.

:class:`CanonicalEvent` is a plain frozen dataclass so that building one (ingest's hot path) costs
nothing; reading one (:meth:`CanonicalEvent.from_json`) validates it with pydantic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, Field, TypeAdapter

from shared.events.types import EventPayload, resolve_type

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
SCHEMA_PREFIX = "urn:upkeep:schema:"


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as every canonical timestamp is written."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("canonical time must carry an offset")
    return value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class CanonicalEvent:
    """A validated event as it travels on the canonical topic."""

    id: Annotated[str, Field(min_length=1, max_length=256)]
    source: Annotated[str, Field(min_length=1, max_length=512)]
    type: str
    subject: str
    time: Annotated[datetime, AfterValidator(_aware_utc)]
    data: dict[str, Any]
    specversion: Literal["1.0"] = "1.0"
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str | None = None
    partitionkey: str | None = None
    sourceoffset: str | None = None

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
        """From parts that were validated already."""
        subject = payload.subject()
        return cls(
            id=event_id,
            source=source,
            type=payload.type_name,
            subject=subject,
            time=time.astimezone(UTC),
            data=payload.model_dump(mode="json", exclude_none=True),
            dataschema=SCHEMA_PREFIX + payload.type_name,
            partitionkey=subject,
            sourceoffset=source_offset,
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
        """Structured-mode JSON; absent optional attributes are left out."""
        body: dict[str, Any] = {
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "subject": self.subject,
            "time": format_time(self.time),
            "datacontenttype": self.datacontenttype,
        }
        for name in ("dataschema", "partitionkey", "sourceoffset"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        body["data"] = self.data
        return orjson.dumps(body)

    @classmethod
    def from_json(cls, raw: bytes | str) -> CanonicalEvent:
        """Parse and validate a canonical event (raises ``pydantic.ValidationError``)."""
        return envelope_adapter().validate_json(raw)


@cache
def envelope_adapter() -> TypeAdapter[CanonicalEvent]:
    return TypeAdapter(CanonicalEvent)
