"""Declarative mappings: how a source's own records (an ERP's push, a CRM table's changes through
Debezium) become Upkeep events, without touching the source.

A mapping file (``services/ingest/mappings/*.yaml``) names its source — Kafka ``topics`` (a
CRM's tables, one topic each, as Debezium writes them) or an inbound webhook ``http`` source —
the record ``format`` (``json``, or ``debezium`` for change
events: see :mod:`services.ingest.debezium`), and one or more ``produce`` rules: when a rule's
``when`` holds, it produces one event of ``type`` whose every field is an expression over the
record. Expressions are **JMESPath** (a small query language with a specification and a
compliance suite; no code runs) plus a few functions of ours:

* ``lookup('table', value)`` — the mapping's lookup table (status codes → Upkeep values); a value
  the table lacks is a mapping failure, never passed on silently;
* ``prefix(value)`` — the mapping's ``id_prefix`` before the value (ids stay apart per source);
* ``concat(a, b, …)`` — text joined (numbers as text);
* ``days_to_date(n)``, ``millis_to_time(n)``, ``micros_to_time(n)`` — Debezium's temporal types
  (a DATE as days since 1970, TIMESTAMP as epoch milli- or microseconds) as ISO 8601;
* ``text(value)`` — a number or boolean as text.

A field whose expression gives null is left out (its default applies). Timestamps without an
offset are read in the mapping's ``timezone``. A rule with ``skip: true`` says which records are
meant to become nothing; a record no rule applies to is dead-lettered (unless the mapping says
``skip_unmatched``), as is a record a rule fails on, with the mapping's name and the failing
field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping as MappingType
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import jmespath
import yaml
from jmespath import functions
from jmespath.exceptions import JMESPathError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from shared.events.fields import TimeZoneName
from shared.events.types import resolve_type

Scalar = str | int | float | bool | None
Topic = Annotated[
    str, StringConstraints(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
]
_LOOKUP_USE = re.compile(r"lookup\(\s*'([^']*)'")
ENVELOPE_FIELDS = ("id", "source", "time", "subject")  # what a rule may set besides data


class Produce(BaseModel):
    """One event a record may become."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    when: str | None = Field(None, description="JMESPath: the rule applies when it is truthy")
    skip: bool = Field(False, description="a record it applies to is meant to become nothing")
    type: str | None = Field(
        None, description="the Upkeep event type, full or short (contract.upserted)"
    )
    id: str | None = Field(
        None, description="JMESPath: the event id (default: the change's or record's identity)"
    )
    time: str | None = Field(None, description="JMESPath: when it happened (ISO 8601)")
    fields: dict[str, str] = Field(default_factory=dict, description="event field -> JMESPath")

    @model_validator(mode="after")
    def _skip_or_produce(self) -> Produce:
        if self.skip and (self.type or self.fields):
            raise ValueError("a skip rule has no type nor fields")
        if not self.skip and (not self.type or not self.fields):
            raise ValueError("a rule needs a type and its fields (or skip: true)")
        return self


class Verify(BaseModel):
    """How a source signs its pushes. ``preset: standard-webhooks`` is the Standard Webhooks
    scheme (``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64>`` over
    ``id.timestamp.body``, secrets ``whsec_<base64>``); otherwise the fields say it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["standard-webhooks"] | None = None
    header: str = Field("X-Signature", max_length=100)
    algorithm: Literal["sha256", "sha512", "sha1"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = Field("", max_length=20, description="before the digest, e.g. sha256=")
    signed: Literal["body", "timestamp.body", "id.timestamp.body"] = "body"
    timestamp_header: str | None = Field(None, max_length=100)
    id_header: str | None = Field(None, max_length=100)
    tolerance_s: int = Field(300, ge=1, le=86_400)

    def resolved(self) -> Verify:
        if self.preset != "standard-webhooks":
            return self
        return Verify(
            header="webhook-signature",
            encoding="base64",
            prefix="v1,",
            signed="id.timestamp.body",
            timestamp_header="webhook-timestamp",
            id_header="webhook-id",
            tolerance_s=self.tolerance_s,
        )


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    topics: list[Topic] = Field(default_factory=list, max_length=50)
    http: str | None = Field(None, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")
    format: Literal["json", "debezium"] = "json"
    verify: Verify | None = Field(None, description="how an http source signs its pushes")

    @model_validator(mode="after")
    def _one(self) -> Source:
        if bool(self.topics) == (self.http is not None):
            raise ValueError("a source is either Kafka topics or an http source, not both")
        if self.verify is not None and self.http is None:
            raise ValueError("verify is for an http source")
        return self


class MappingSpec(BaseModel):
    """A mapping file as written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str | None = Field(None, max_length=2000)
    source: Source
    timezone: TimeZoneName | None = None
    id_prefix: str = Field("", max_length=32, pattern=r"^[A-Za-z0-9._:-]*$")
    lookups: dict[str, dict[str, Scalar]] = Field(default_factory=dict)
    skip_unmatched: bool = False
    produce: list[Produce] = Field(min_length=1, max_length=20)


class MappingInvalid(ValueError):
    """A mapping that does not validate: every error, each with where it is."""

    def __init__(self, name: str, errors: list[str]) -> None:
        super().__init__(f"{name}: " + "; ".join(errors))
        self.name, self.errors = name, errors


class MappingFailed(ValueError):
    """A record the mapping cannot map: which mapping, which field, why (no input values)."""

    def __init__(self, mapping: str, field: str, why: str) -> None:
        super().__init__(f"mapping {mapping}, field {field}: {why}")
        self.mapping, self.field, self.why = mapping, field, why


class _Unmapped(Exception):
    """Raised inside an expression: a lookup without the value."""


class _Functions(functions.Functions):  # type: ignore[misc]  # jmespath is untyped
    """The functions every mapping's expressions may call (the lookups are the mapping's)."""

    def __init__(self, lookups: MappingType[str, MappingType[str, Scalar]], prefix: str) -> None:
        super().__init__()
        self._lookups, self._prefix = lookups, prefix

    @functions.signature({"types": ["string"]}, {"types": ["string", "number", "boolean", "null"]})
    def _func_lookup(self, table: str, value: Any) -> Any:
        key = _text(value)
        found = self._lookups.get(table, {})
        if key not in found:
            raise _Unmapped(f"lookup {table!r} has no entry for the record's value")
        return found[key]

    @functions.signature({"types": ["string", "number", "null"]})
    def _func_prefix(self, value: Any) -> Any:
        return None if value is None else f"{self._prefix}{_text(value)}"

    @functions.signature({"types": ["string", "number", "boolean", "null"], "variadic": True})
    def _func_concat(self, *values: Any) -> str:
        return "".join(_text(v) for v in values if v is not None)

    @functions.signature({"types": ["string", "number", "boolean", "null"]})
    def _func_text(self, value: Any) -> Any:
        return None if value is None else _text(value)

    @functions.signature({"types": ["number", "null"]})
    def _func_days_to_date(self, value: Any) -> Any:
        return (
            None if value is None else (date(1970, 1, 1) + timedelta(days=int(value))).isoformat()
        )

    @functions.signature({"types": ["number", "null"]})
    def _func_millis_to_time(self, value: Any) -> Any:
        return None if value is None else _epoch(value / 1000)

    @functions.signature({"types": ["number", "null"]})
    def _func_micros_to_time(self, value: Any) -> Any:
        return None if value is None else _epoch(value / 1_000_000)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _epoch(seconds: float) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)).isoformat()


@dataclass(frozen=True)
class _Rule:
    spec: Produce
    when: Any
    id: Any
    time: Any
    fields: dict[str, Any]


class Mapping:
    """A validated mapping, its expressions compiled once."""

    def __init__(self, spec: MappingSpec) -> None:
        errors = validate(spec)
        if errors:
            raise MappingInvalid(spec.name, errors)
        self.spec = spec
        self._options = jmespath.Options(custom_functions=_Functions(spec.lookups, spec.id_prefix))
        self._rules = [
            _Rule(
                p,
                jmespath.compile(p.when) if p.when else None,
                jmespath.compile(p.id) if p.id else None,
                jmespath.compile(p.time) if p.time else None,
                {f: jmespath.compile(e) for f, e in p.fields.items()},
            )
            for p in spec.produce
        ]

    @property
    def name(self) -> str:
        return self.spec.name

    def _eval(self, compiled: Any, document: Any, field: str) -> Any:
        try:
            return compiled.search(document, options=self._options)
        except _Unmapped as exc:
            raise MappingFailed(self.name, field, str(exc)) from None
        except JMESPathError as exc:  # a function given the wrong type of value
            raise MappingFailed(self.name, field, type(exc).__name__) from None

    def apply(self, document: Any, identity: str) -> list[dict[str, Any]]:
        """The plain events (``type``, ``id``, ``source``, fields) a record's ``document``
        becomes; ``identity`` names the record's occurrence (the default event id). Raises
        :class:`MappingFailed`."""
        found, applied = [], False
        for n, rule in enumerate(self._rules):
            if rule.when is not None and not self._eval(rule.when, document, f"produce[{n}].when"):
                continue
            applied = True
            if rule.spec.skip:
                continue
            event: dict[str, Any] = {
                "type": rule.spec.type,
                "source": f"urn:upkeep:mapping:{self.name}",
            }
            for field, compiled in rule.fields.items():
                value = self._eval(compiled, document, field)
                if value is not None:
                    event[field] = value
            event_id = self._eval(rule.id, document, "id") if rule.id is not None else None
            event["id"] = _text(event_id) if event_id is not None else f"{identity}-{n}"
            if rule.time is not None:
                at = self._eval(rule.time, document, "time")
                if at is not None:
                    event["time"] = at
            found.append(event)
        if not applied and not self.spec.skip_unmatched:
            raise MappingFailed(self.name, "produce", "no rule applies to the record")
        return found


def validate(spec: MappingSpec) -> list[str]:
    """Every error of a mapping, each with where it is: expressions that do not compile, types
    that do not exist, fields the type does not have or needs, lookups that are not there."""
    errors = []
    for n, rule in enumerate(spec.produce):
        where = f"produce[{n}]"
        model = resolve_type(rule.type) if rule.type else None
        if rule.type and model is None:
            errors.append(f"{where}.type: unknown event type {rule.type!r}")
        expressions = {"when": rule.when, "id": rule.id, "time": rule.time}
        expressions |= {f"fields.{f}": e for f, e in rule.fields.items()}
        for at, text in expressions.items():
            if text is None:
                continue
            try:
                jmespath.compile(text)
            except JMESPathError as exc:
                errors.append(f"{where}.{at}: {str(exc).splitlines()[0]}")
            for table in _LOOKUP_USE.findall(text):
                if table not in spec.lookups:
                    errors.append(f"{where}.{at}: no lookup table {table!r}")
        if model is not None:
            known = set(model.model_fields)
            for field in rule.fields:
                if field in ENVELOPE_FIELDS or field == "type":
                    errors.append(f"{where}.fields.{field}: set it with {field}: (not a field)")
                elif field not in known:
                    errors.append(f"{where}.fields.{field}: {model.type_name} has no such field")
            required = {f for f, info in model.model_fields.items() if info.is_required()}
            for field in sorted(required - set(rule.fields)):
                errors.append(f"{where}.fields: {model.type_name} needs {field}")
    return errors


def parse(text: str, name: str = "mapping") -> Mapping:
    """A mapping from its YAML (or JSON) text; raises :class:`MappingInvalid` with every error."""
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MappingInvalid(name, [f"not YAML: {str(exc).splitlines()[0]}"]) from None
    try:
        spec = MappingSpec.model_validate(loaded)
    except ValidationError as exc:
        errors = [
            f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in exc.errors()
        ]
        raise MappingInvalid(name, errors) from None
    return Mapping(spec)


def load(path: Path) -> Mapping:
    return parse(path.read_text(encoding="utf-8"), path.stem)
