"""Why an input was refused. The value is the dead-letter reason code and a metric label."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    OVERSIZED = "oversized"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
    INVALID_ENVELOPE = "invalid_envelope"
    MISSING_TYPE = "missing_type"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_SUBJECT = "missing_subject"
    INVALID_DATA = "invalid_data"
    BAD_TIMEZONE = "bad_timezone"
    NAIVE_TIMESTAMP = "naive_timestamp"
    INVALID_EMAIL = "invalid_email"
    INVALID_PHONE = "invalid_phone"
    MAPPING_FAILED = "mapping_failed"  # a mapped source's record its mapping cannot map
    NOT_A_CHANGE = "not_a_change"  # a record on a Debezium topic that is no change event


@dataclass(frozen=True, slots=True)
class Rejection:
    """An input that cannot become a canonical event. ``detail`` never quotes input values."""

    reason: Reason
    detail: str
