"""Field types of the event contract, each of which normalises what it accepts.

Errors raised here carry a stable error *type* (``invalid_email``, ``invalid_phone``,
``bad_timezone``, ``naive_timestamp``) that ingest turns into a dead-letter reason.

Validation context keys (all optional), passed as ``model_validate(..., context=...)``:

* ``phone_region`` — ISO 3166 region used for phone numbers written without ``+country``;
* ``default_timezone`` — IANA zone assumed for timestamps written without an offset.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints, ValidationInfo
from pydantic_core import PydanticCustomError


def _clean_text(value: Any) -> Any:
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value).strip()
    return value


@lru_cache(maxsize=4096)
def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; raises ``ZoneInfoNotFoundError`` (cached, so cheap)."""
    return ZoneInfo(name)


def _check_timezone(value: str) -> str:
    if not value or value.startswith(("/", ".")) or ".." in value:
        raise PydanticCustomError("bad_timezone", "not an IANA time zone: {tz}", {"tz": value})
    try:
        zone(value)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise PydanticCustomError(
            "bad_timezone", "not an IANA time zone: {tz}", {"tz": value}
        ) from exc
    return value


@lru_cache(maxsize=65536)
def _normalise_email(value: str) -> str:
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise PydanticCustomError("invalid_email", "not a valid e-mail address") from exc


def _check_email(value: str) -> str:
    return _normalise_email(value)


def _check_phone(value: str, info: ValidationInfo) -> str:
    region = (info.context or {}).get("phone_region")
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        raise PydanticCustomError("invalid_phone", "not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise PydanticCustomError("invalid_phone", "not a valid phone number")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _to_utc(value: datetime, info: ValidationInfo) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        default = (info.context or {}).get("default_timezone")
        if not default:
            raise PydanticCustomError(
                "naive_timestamp", "timestamp has no UTC offset and no default zone is set"
            )
        value = value.replace(tzinfo=zone(default))
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+01:00
        raise PydanticCustomError("datetime_range", "timestamp out of range") from exc


Id = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/\-]*$",
    ),
]
"""An identifier from an upstream system: trimmed, 1-128 ASCII characters, no spaces."""

Text = Annotated[str, BeforeValidator(_clean_text), StringConstraints(max_length=500)]
Name = Annotated[str, BeforeValidator(_clean_text), StringConstraints(min_length=1, max_length=200)]
TimeZoneName = Annotated[
    str,
    BeforeValidator(_clean_text),
    StringConstraints(max_length=64),
    AfterValidator(_check_timezone),
]
Email = Annotated[
    str,
    BeforeValidator(_clean_text),
    StringConstraints(max_length=254),
    AfterValidator(_check_email),
]
Phone = Annotated[
    str,
    BeforeValidator(_clean_text),
    StringConstraints(max_length=40),
    AfterValidator(_check_phone),
]
UtcDatetime = Annotated[datetime, AfterValidator(_to_utc)]
"""A moment; stored and published in UTC. Naive input is read in the context's default zone."""

Locale = Annotated[
    str,
    BeforeValidator(_clean_text),
    StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"),
]
Currency = Annotated[
    str, StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z]{3}$")
]
Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=4)]


def utc_now() -> datetime:
    return datetime.now(UTC)
