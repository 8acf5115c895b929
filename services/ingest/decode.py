"""Turns what upstream systems send into CloudEvents attributes plus data.

Three forms are accepted, on Kafka and over HTTP:

* **binary mode** — context attributes in ``ce_*`` headers, the value is the JSON data;
* **structured mode** — the value is a CloudEvents JSON object (``specversion`` present, or a
  ``content-type: application/cloudevents+json`` header);
* **plain JSON** — an object with a ``type`` field, every other field is the data, optionally with
  ``id``, ``source``, ``time`` and ``subject`` as today's upstream systems send them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from services.ingest.reasons import Reason, Rejection

Form = Literal["binary", "structured", "plain"]
STRUCTURED_TYPES = ("application/cloudevents+json", "application/cloudevents")
PLAIN_ATTRIBUTES = ("type", "id", "source", "time", "subject")


@dataclass(frozen=True, slots=True)
class RawEvent:
    form: Form
    attributes: dict[str, Any]
    data: Any


def _header_map(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in headers:
        found[name.lower()] = (value or b"").decode("utf-8", "replace")
    return found


def _is_json_media(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("", "application/json", "text/json") or media.endswith("+json")


def decode_record(
    value: bytes | None, headers: Sequence[tuple[str, bytes]], *, max_bytes: int
) -> RawEvent | Rejection:
    """Decode one Kafka record (value + headers)."""
    if value is not None and len(value) > max_bytes:
        return Rejection(Reason.OVERSIZED, f"{len(value)} bytes exceeds the {max_bytes} limit")
    head = _header_map(headers)
    if "ce_specversion" in head:
        return _decode_binary(value, head)
    try:
        body = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        return Rejection(Reason.INVALID_JSON, f"not valid JSON: {exc.msg}")
    structured = head.get("content-type", "").lower().startswith(STRUCTURED_TYPES)
    return decode_object(body, structured=structured)


def decode_object(body: Any, *, structured: bool = False) -> RawEvent | Rejection:
    """Decode one already-parsed JSON value (an HTTP batch item, or a record's body)."""
    if not isinstance(body, dict):
        return Rejection(Reason.NOT_AN_OBJECT, f"expected a JSON object, got {_kind(body)}")
    if structured or "specversion" in body:
        if "data_base64" in body:
            return Rejection(Reason.UNSUPPORTED_CONTENT_TYPE, "data_base64 is not accepted")
        content_type = body.get("datacontenttype") or "application/json"
        if not isinstance(content_type, str) or not _is_json_media(content_type):
            return Rejection(Reason.UNSUPPORTED_CONTENT_TYPE, "datacontenttype must be JSON")
        attributes = {k: v for k, v in body.items() if k != "data"}
        return RawEvent("structured", attributes, body.get("data"))
    if "type" not in body:
        return Rejection(Reason.MISSING_TYPE, "a plain JSON event needs a 'type' field")
    attributes = {k: body[k] for k in PLAIN_ATTRIBUTES if k in body}
    data = {k: v for k, v in body.items() if k not in PLAIN_ATTRIBUTES}
    return RawEvent("plain", attributes, data)


def _decode_binary(value: bytes | None, head: dict[str, str]) -> RawEvent | Rejection:
    content_type = head.get("content-type", "application/json")
    if not _is_json_media(content_type):
        return Rejection(Reason.UNSUPPORTED_CONTENT_TYPE, "binary-mode data must be JSON")
    attributes: dict[str, Any] = {
        name[3:]: text for name, text in head.items() if name.startswith("ce_")
    }
    attributes["datacontenttype"] = content_type
    try:
        data = orjson.loads(value) if value else None
    except orjson.JSONDecodeError as exc:
        return Rejection(Reason.INVALID_JSON, f"binary-mode data is not valid JSON: {exc.msg}")
    return RawEvent("binary", attributes, data)


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number"}.get(
        type(value), "null" if value is None else type(value).__name__
    )
