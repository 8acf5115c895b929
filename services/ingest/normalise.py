"""Validates a decoded event against the contract and normalises it into a canonical event.

Normalising is idempotent — a canonical event normalises to itself — so the HTTP path can publish
its result onto the raw topic and the consumer path normalise it again.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from services.ingest.decode import RawEvent
from services.ingest.reasons import Reason, Rejection
from shared.events.envelope import CanonicalEvent
from shared.events.fields import zone
from shared.events.types import EventPayload, resolve_type

# derived ids for plain events that carry none: same content, same id
DERIVED_ID_NAMESPACE = uuid.UUID("6f1d4a52-52b6-4c62-9a87-3c1d3c0f7a10")
OFFSET_RE = re.compile(r"^(Z|[+-](0\d|1\d|2[0-3]):[0-5]\d)$")
_CUSTOM_REASONS = {
    "bad_timezone": Reason.BAD_TIMEZONE,
    "naive_timestamp": Reason.NAIVE_TIMESTAMP,
    "invalid_email": Reason.INVALID_EMAIL,
    "invalid_phone": Reason.INVALID_PHONE,
}


@dataclass(frozen=True, slots=True)
class NormaliseContext:
    """What the deployment decides about inputs that do not say it themselves."""

    default_source: str = "urn:upkeep:ingest"
    default_timezone: str | None = None  # for timestamps without an offset
    phone_region: str | None = None  # for phone numbers without +country
    now: datetime | None = None  # fallback event time; defaults to the wall clock

    def validation_context(self) -> dict[str, Any]:
        return {"default_timezone": self.default_timezone, "phone_region": self.phone_region}


def normalise(
    raw: RawEvent, ctx: NormaliseContext, *, origin: str | None = None
) -> CanonicalEvent | Rejection:
    """Validate and normalise one decoded event.

    ``origin`` names where the input came from (``topic/partition/offset``); it seeds the id of
    a plain event that has neither an ``id`` nor a timestamp of its own, so a redelivered record
    keeps its id while a re-sent state snapshot gets a new one.
    """
    attrs = raw.attributes
    if raw.form != "plain" and attrs.get("specversion") != "1.0":
        return Rejection(Reason.INVALID_ENVELOPE, "specversion must be '1.0'")
    type_name = attrs.get("type")
    if not isinstance(type_name, str) or not type_name:
        return Rejection(Reason.MISSING_TYPE, "the event has no type")
    model = resolve_type(type_name)
    if model is None:
        return Rejection(Reason.UNKNOWN_TYPE, f"unknown event type {type_name[:100]!r}")
    if not isinstance(raw.data, dict):
        return Rejection(Reason.INVALID_DATA, "event data must be a JSON object")
    payload = _validate(model, raw.data, ctx)
    if isinstance(payload, Rejection):
        return payload
    envelope = _envelope(raw, payload, ctx, origin)
    if isinstance(envelope, Rejection):
        return envelope
    event_id, source, time, offset = envelope
    return CanonicalEvent.build(
        event_id=event_id, source=source, payload=payload, time=time, source_offset=offset
    )


def _validate(
    model: type[EventPayload], data: dict[str, Any], ctx: NormaliseContext
) -> EventPayload | Rejection:
    try:
        return model.model_validate(data, context=ctx.validation_context())
    except ValidationError as exc:
        return _rejection_from(model, exc)


def _rejection_from(model: type[EventPayload], exc: ValidationError) -> Rejection:
    errors = exc.errors(include_input=False, include_url=False)
    for error in errors:
        if error["type"] == "missing" and error["loc"] == (model.subject_field,):
            return Rejection(Reason.MISSING_SUBJECT, f"{model.subject_field} is required")
    for error in errors:
        reason = _CUSTOM_REASONS.get(error["type"])
        if reason is not None:
            return Rejection(reason, f"{_loc(error['loc'])}: {error['msg']}")
    summary = "; ".join(f"{_loc(e['loc'])}: {e['msg']}" for e in errors[:5])
    return Rejection(Reason.INVALID_DATA, summary)


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "data"


def _envelope(
    raw: RawEvent, payload: EventPayload, ctx: NormaliseContext, origin: str | None
) -> tuple[str, str, datetime, str | None] | Rejection:
    attrs = raw.attributes
    source = attrs.get("source", ctx.default_source if raw.form == "plain" else None)
    if not isinstance(source, str) or not source.strip() or len(source) > 512:
        return Rejection(Reason.INVALID_ENVELOPE, "source must be a non-empty string")
    event_id = attrs.get("id")
    if event_id is None and raw.form == "plain":
        event_id = _derived_id(payload, origin)
    if isinstance(event_id, int) and not isinstance(event_id, bool):
        event_id = str(event_id)
    if not isinstance(event_id, str) or not event_id.strip() or len(event_id) > 256:
        return Rejection(Reason.INVALID_ENVELOPE, "id must be a non-empty string")
    timing = _event_time(attrs, raw.data, payload, ctx)
    if isinstance(timing, Rejection):
        return timing
    return event_id.strip(), source.strip(), timing[0], timing[1]


def _derived_id(payload: EventPayload, origin: str | None) -> str:
    """An id for a plain event that has none.

    With a timestamp in the payload, the content identifies the occurrence: the same order sent
    twice is one event. Without one (a profile snapshot with no ``updated_at``) content is not
    enough — A, then B, then A again are three real changes — so the record's position is used,
    or a fresh id when there is none (HTTP; the client gets it back in the answer)."""
    if payload.event_time() is None:
        if origin is None:
            return str(uuid.uuid4())
        return str(uuid.uuid5(DERIVED_ID_NAMESPACE, "origin\n" + origin))
    body = orjson.dumps(payload.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return str(uuid.uuid5(DERIVED_ID_NAMESPACE, payload.type_name + "\n" + body.decode()))


def _event_time(
    attrs: dict[str, Any], data: dict[str, Any], payload: EventPayload, ctx: NormaliseContext
) -> tuple[datetime, str | None] | Rejection:
    """The event's UTC time and the UTC offset it was written in (``sourceoffset``)."""
    given = attrs.get("time")
    if given is not None:
        parsed = _parse_time(given, ctx)
        if isinstance(parsed, Rejection):
            return parsed
        moment, offset = parsed
        kept = attrs.get("sourceoffset")
        if isinstance(kept, str) and OFFSET_RE.match(kept):
            offset = kept  # a canonical event passing through again
        return moment, offset
    from_payload = payload.event_time()
    if from_payload is not None and payload.time_field is not None:
        written = data.get(payload.time_field)
        offset = _offset_of(written, ctx.default_timezone) if isinstance(written, str) else None
        return from_payload, offset
    # no time anywhere: ingest's clock, which writes UTC
    return (ctx.now or datetime.now(UTC)).astimezone(UTC), "Z"


def _parse_time(value: Any, ctx: NormaliseContext) -> tuple[datetime, str | None] | Rejection:
    if not isinstance(value, str):
        return Rejection(Reason.INVALID_ENVELOPE, "time must be an RFC 3339 string")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return Rejection(Reason.INVALID_ENVELOPE, "time is not an RFC 3339 timestamp")
    if moment.tzinfo is None:
        if ctx.default_timezone is None:
            return Rejection(Reason.NAIVE_TIMESTAMP, "time has no UTC offset")
        moment = moment.replace(tzinfo=zone(ctx.default_timezone))
    try:
        return moment.astimezone(UTC), _format_offset(moment)
    except OverflowError:
        return Rejection(Reason.INVALID_ENVELOPE, "time is out of range")


def _offset_of(text: str, default_timezone: str | None) -> str | None:
    """The UTC offset ``text`` was written in (a naive one is read in the default zone)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        if default_timezone is None:
            return None
        moment = moment.replace(tzinfo=zone(default_timezone))
    return _format_offset(moment)


def _format_offset(moment: datetime) -> str | None:
    offset = moment.utcoffset()
    if offset is None:
        return None
    minutes = int(offset.total_seconds() // 60)
    if minutes == 0:
        return "Z"
    sign = "+" if minutes > 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
