"""What a journey is: the document operations staff write (YAML or JSON), its validation, and
its published JSON Schema (``docs/schemas/journey.v1.json``, ``make schemas``).

A definition that does not validate is refused with every error and its path
(:func:`validate`), e.g. ``steps.2.wait_for.timeout: not a duration ('7 days')``. The reference
is ``docs/journeys.md``.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import jinja2
import yaml
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from services.rules.journeys.expressions import SUBJECT_FIELDS, ExpressionError, compile_condition
from shared.events.types import EventPayload, JourneyName, StepId, StepKind, resolve_type
from shared.templates import missing_templates

SCHEMA_ID = "https://upkeep.dev/schemas/journey.v1.json"
MAX_STEPS = 50
INLINE_TEMPLATE = "journey_message"  # renders an inline message's subject and body
_SAMPLE_TIME = datetime(2026, 1, 1, tzinfo=UTC)  # fills an emitted event's time when checked
_TEXT = ImmutableSandboxedEnvironment(autoescape=False, undefined=jinja2.Undefined)  # as sent
_DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?$")


def parse_duration(text: str) -> timedelta:
    """``"7d"``, ``"1w2d"``, ``"36h"``, ``"90m"`` as a timedelta (weeks, days, hours, minutes)."""
    found = _DURATION.match(text.strip())
    if not text.strip() or found is None:
        raise ValueError(f"not a duration ({text!r}): write e.g. 7d, 36h, 1w2d, 90m")
    weeks, days, hours, minutes = (int(g or 0) for g in found.groups())
    return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes)


def _duration(text: str) -> str:
    if parse_duration(text) <= timedelta(0):
        raise ValueError("must be longer than zero")
    return text


def _condition(source: str) -> str:
    try:
        compile_condition(source)
    except ExpressionError as exc:
        raise ValueError(str(exc)) from None
    return source


def _event_type(name: str) -> str:
    if resolve_type(name) is None:
        raise ValueError(f"unknown event type {name!r} (see docs/schemas)")
    return name


def _local_time(text: str) -> str:
    try:
        time.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a local time ({text!r}): write HH:MM") from None
    return text


Duration = Annotated[str, AfterValidator(_duration)]
Expression = Annotated[str, StringConstraints(min_length=1), AfterValidator(_condition)]
EventType = Annotated[str, AfterValidator(_event_type)]
LocalTime = Annotated[str, AfterValidator(_local_time)]
Recipient = Annotated[
    str, StringConstraints(pattern=r"^(customer|channel|owner|manager|team:[A-Za-z0-9._-]+)$")
]
Locale = Literal["en", "zh-CN"]
DateField = Literal[
    "customer.birthday", "customer.customer_since", "contract.end_date", "contract.start_date"
]
YEARLY_DATES = frozenset({"customer.birthday", "customer.customer_since"})


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Title(_Part):
    en: str = Field(min_length=1, max_length=200)
    zh_CN: str | None = Field(default=None, alias="zh-CN", max_length=200)


class Trigger(_Part):
    """Exactly one of ``event`` (with ``when``), ``date`` (with ``offset_days``, ``at``) or
    ``segment``. ``when`` also filters date triggers."""

    event: EventType | None = None
    date: DateField | None = None
    offset_days: int = Field(default=0, ge=-366, le=366)  # -30: 30 days before the date
    at: LocalTime = "09:00"  # the local time, in the subject's zone, a date trigger fires at
    segment: Expression | None = None
    when: Expression | None = None
    # an event (or the event that brings a subject into a segment) older than this enters no
    # one: importing last year's history does not welcome last year's distributors
    max_age: Duration = "1d"

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        kinds = [k for k in ("event", "date", "segment") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of event, date or segment")
        if self.segment is not None and self.when is not None:
            raise ValueError("a segment trigger is its own condition: no when")
        return self

    @property
    def kind(self) -> Literal["event", "date", "segment"]:
        return "event" if self.event else "date" if self.date else "segment"


class Outcome(_Part):
    """A goal or an exit: an event (of ``event``, matching ``when``) or, without ``event``, a
    condition on the subject checked at every event about it."""

    event: EventType | None = None
    when: Expression | None = None

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.event is None and self.when is None:
            raise ValueError("give an event, a when, or both")
        return self


class Reentry(_Part):
    """``once``: a subject enters at most once; ``every_time``: whenever the trigger matches;
    ``once_per``: at most once per ``period``. ``max_concurrent``: runs a subject may be in at
    the same time."""

    mode: Literal["once", "every_time", "once_per"] = "once"
    period: Duration | None = None
    max_concurrent: int = Field(default=1, ge=1, le=20)

    @model_validator(mode="after")
    def _period(self) -> Self:
        if (self.mode == "once_per") != (self.period is not None):
            raise ValueError("once_per needs a period, and only once_per takes one")
        return self


class Message(_Part):
    subject: str = Field(min_length=1, max_length=300)
    body: str = Field(min_length=1, max_length=10_000)


class Send(_Part):
    """A message or a task. ``to``: the customer, the channel, the subject's owner, the
    owner's manager, or ``team:<name>`` (its least loaded active member). Either a
    ``template`` (with extra ``data``) or an inline ``message`` per locale (``en`` required)."""

    kind: Literal["email", "chat", "webhook", "task"] = "email"
    to: Recipient = "owner"
    template: str | None = Field(default=None, pattern=r"^[a-z0-9_]+$")
    message: dict[Locale, Message] | None = None
    data: dict[str, str | int | float | bool] = Field(default_factory=dict)
    purpose: str = Field(default="journey", pattern=r"^[a-z0-9_]+$")
    marketing: bool | None = None  # default: yes to a customer or channel, no to staff
    due_in: Duration = "2d"  # a task's due time after it is created
    priority: Literal["low", "normal", "high", "urgent"] = "normal"  # a task's

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.template is None) == (self.message is None):
            raise ValueError("give a template or a message, not both")
        if self.message is not None and "en" not in self.message:
            raise ValueError("a message needs its en text (the fallback locale)")
        to_subject = self.to in ("customer", "channel")
        if to_subject and self.kind in ("chat", "task"):
            raise ValueError(f"a {self.kind} goes to staff (owner, manager, team:…), not {self.to}")
        return self

    @property
    def template_name(self) -> str:
        return self.template or INLINE_TEMPLATE


class Wait(_Part):
    """``for`` a duration, or ``until`` the next local time (``"09:00"``, in the subject's
    zone); both: the duration, then the next such time."""

    for_: Duration | None = Field(default=None, alias="for")
    until: LocalTime | None = None

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.for_ is None and self.until is None:
            raise ValueError("give for, until, or both")
        return self


class WaitFor(_Part):
    """Wait for an event about the subject (``event`` matching ``when``) for at most
    ``timeout``; continue at ``on_event`` or ``on_timeout`` (a later step's id; ``next``: the
    step after this one)."""

    event: EventType
    when: Expression | None = None
    timeout: Duration
    on_event: StepId = "next"
    on_timeout: StepId = "next"


class Branch(_Part):
    """Continue at ``then`` when ``when`` holds, else at ``else`` (later steps' ids, or
    ``next``)."""

    when: Expression
    then: StepId = "next"
    else_: StepId = Field(default="next", alias="else")


class SetLabels(_Part):
    """Tag the subject, untag it, or set attributes on it (``subject.labelled``)."""

    add_tags: list[str] = Field(default_factory=list, max_length=20)
    remove_tags: list[str] = Field(default_factory=list, max_length=20)
    attributes: dict[str, str | int | float | bool | None] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not (self.add_tags or self.remove_tags or self.attributes):
            raise ValueError("give add_tags, remove_tags or attributes")
        return self


class EmitEvent(_Part):
    """Publish an event of ``type`` about the subject with ``data`` (the subject's id field is
    filled in; the time fields default to the moment of the step)."""

    type: EventType
    data: dict[str, Any] = Field(default_factory=dict)


class Exit(_Part):
    """End the run here (counted as ``exited``)."""


class Step(_Part):
    """One step: an ``id`` (stable: it names the step's action and its counters) and exactly
    one of ``send``, ``wait``, ``wait_for``, ``branch``, ``set``, ``emit``, ``exit``."""

    id: StepId
    send: Send | None = None
    wait: Wait | None = None
    wait_for: WaitFor | None = None
    branch: Branch | None = None
    set: SetLabels | None = None
    emit: EmitEvent | None = None
    exit: Exit | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        kinds = [k for k in STEP_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of {', '.join(STEP_KINDS)}")
        if self.id == "next":
            raise ValueError("'next' is reserved: it means the following step")
        return self

    @property
    def kind(self) -> StepKind:
        return next(k for k in STEP_KINDS if getattr(self, k) is not None)


STEP_KINDS: tuple[StepKind, ...] = typing.get_args(StepKind)


class Journey(_Part):
    """A journey, as written. ``enabled`` and the version are not part of it: they are the
    catalogue's (``PUT`` keeps a journey's state; ``:enable`` switches it on)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        json_schema_extra={"$id": SCHEMA_ID, "title": "Upkeep journey"},
    )

    name: JourneyName
    title: Title | None = None
    description: str | None = Field(default=None, max_length=2000)
    subject: Literal["customer", "channel"]
    trigger: Trigger
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    goal: Outcome | None = None
    exits: list[Outcome] = Field(default_factory=list, max_length=10)
    reentry: Reentry = Field(default_factory=Reentry)
    on_update: Literal["finish", "migrate"] = "finish"
    enabled: bool | None = None  # only in files: applied when given (see docs/journeys.md)

    @model_validator(mode="after")
    def _flow(self) -> Self:
        errors = _flow_errors([(s.id, _targets(s)) for s in self.steps])
        if errors:
            raise ValueError("; ".join(f"{e['path']}: {e['message']}" for e in errors))
        return self

    def index_of(self, target: str, after: int) -> int:
        """The index a step's target names (``next``: ``after + 1``; past the end: done)."""
        if target == "next":
            return after + 1
        return next(i for i, s in enumerate(self.steps) if s.id == target)

    def definition(self) -> dict[str, Any]:
        """The document without ``enabled``: what versions compare."""
        return self.model_dump(mode="json", by_alias=True, exclude={"enabled"}, exclude_none=True)

    def event_for(self, step: EmitEvent) -> type[EventPayload]:
        model = resolve_type(step.type)
        assert model is not None  # validated
        return model


def _flow_errors(
    steps: list[tuple[str | None, list[tuple[str, str]]]],
) -> list[dict[str, str]]:
    """Duplicate step ids and targets that are not later steps, from each step's id (``None``:
    it has none) and its (field, target) pairs."""
    errors = []
    ids = [step_id for step_id, _ in steps]
    seen: set[str] = set()
    for index, (step_id, targets) in enumerate(steps):
        if step_id is None:
            pass
        elif step_id in seen:
            errors.append(
                {"path": f"steps.{index}.id", "message": f"{step_id!r} is used by an earlier step"}
            )
        else:
            seen.add(step_id)
        for field, target in targets:
            if target == "next":
                continue
            if target not in ids:
                errors.append({"path": f"steps.{index}.{field}", "message": f"no step {target!r}"})
            elif ids.index(target) <= index:
                errors.append(
                    {
                        "path": f"steps.{index}.{field}",
                        "message": f"{target!r} is not a later step (journeys only move forward)",
                    }
                )
    return errors


def _raw_targets(step: Mapping[str, Any]) -> list[tuple[str, str]]:
    """:func:`_targets` of a step as written (before it validated)."""
    found = []
    for kind, fields in (("wait_for", ("on_event", "on_timeout")), ("branch", ("then", "else"))):
        part = step.get(kind)
        if isinstance(part, Mapping):
            found += [(f"{kind}.{f}", str(part.get(f, "next"))) for f in fields]
    return found


def _targets(step: Step) -> list[tuple[str, str]]:
    if step.wait_for is not None:
        return [
            ("wait_for.on_event", step.wait_for.on_event),
            ("wait_for.on_timeout", step.wait_for.on_timeout),
        ]
    if step.branch is not None:
        return [("branch.then", step.branch.then), ("branch.else", step.branch.else_)]
    return []


class Invalid(ValueError):
    """A definition that does not validate: ``errors`` lists each as ``{"path", "message"}``."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['path']}: {e['message']}" for e in errors))
        self.errors = errors


def validate(document: Mapping[str, Any], template_root: Path | None = None) -> Journey:
    """The journey in ``document``, or :class:`Invalid` with every error and its path. With
    ``template_root``, the templates its sends name must exist there."""
    errors: list[dict[str, str]] = []
    try:
        journey: Journey | None = Journey.model_validate(dict(document))
    except ValidationError as exc:
        # the checks of the whole journey (step ids, targets) and of each step that validated
        # run all the same: every error is reported at once, not the first kind found
        journey = None
        errors = [entry for e in exc.errors() for entry in _errors(e)]
        errors += [e for e in _flow_errors_of(document) if e not in errors]
    subject = journey.subject if journey else document.get("subject")
    for index, step in _steps_that_validate(journey, document):
        send = step.send
        if (
            template_root is not None
            and send
            and missing_templates([send.template_name], template_root)
        ):
            errors.append(
                {
                    "path": f"steps.{index}.send.template",
                    "message": f"no template {send.template_name!r} in the template store",
                }
            )
        if send is not None:
            errors += _message_errors(index, send)
        if step.emit is not None and subject in ("customer", "channel"):
            errors += _emit_errors(str(subject), index, step.emit)
    if errors or journey is None:
        raise Invalid(errors)
    return journey


def _flow_errors_of(document: Mapping[str, Any]) -> list[dict[str, str]]:
    steps = document.get("steps")
    if not isinstance(steps, list) or not all(isinstance(s, Mapping) for s in steps):
        return []
    return _flow_errors(
        [(s["id"] if isinstance(s.get("id"), str) else None, _raw_targets(s)) for s in steps]
    )


def _steps_that_validate(
    journey: Journey | None, document: Mapping[str, Any]
) -> list[tuple[int, Step]]:
    if journey is not None:
        return list(enumerate(journey.steps))
    steps = document.get("steps")
    found = []
    for index, raw in enumerate(steps if isinstance(steps, list) else []):
        try:
            found.append((index, Step.model_validate(raw)))
        except ValidationError:
            continue  # reported with the journey's errors
    return found


def _message_errors(index: int, send: Send) -> list[dict[str, str]]:
    """An inline message's texts must compile and name only ``subject``'s documented fields
    (an unknown name's attribute would fail every time the step runs)."""
    errors = []
    for locale, text in (send.message or {}).items():
        for part in ("subject", "body"):
            problem = _text_problem(getattr(text, part))
            if problem is not None:
                path = f"steps.{index}.send.message.{locale}.{part}"
                errors.append({"path": path, "message": problem})
    return errors


def _text_problem(source: str) -> str | None:
    try:
        _TEXT.from_string(source)
        tree = _TEXT.parse(source)
    except jinja2.TemplateError as exc:
        return f"not a valid text: {exc}"
    unknown = sorted(meta.find_undeclared_variables(tree) - {"subject"})
    if unknown:
        return f"unknown name {unknown[0]!r} (use subject)"
    for node in tree.find_all(nodes.Getattr):
        on_subject = isinstance(node.node, nodes.Name) and node.node.name == "subject"
        if on_subject and node.attr not in SUBJECT_FIELDS:
            return f"subject has no field {node.attr!r} (see docs/journeys.md)"
    return None


def _emit_errors(kind: str, index: int, emit: EmitEvent) -> list[dict[str, str]]:
    """An emitted event must validate once the subject and time are filled in."""
    from services.rules.journeys.runner import emitted_payload  # the runner fills the same way

    subject = f"{kind}:SAMPLE-1"
    try:
        emitted_payload(emit, subject, _SAMPLE_TIME)
    except ValidationError as exc:
        return [
            {
                "path": f"steps.{index}.emit.data." + ".".join(str(p) for p in e["loc"]),
                "message": e["msg"],
            }
            for e in exc.errors()
        ]
    except ValueError as exc:
        return [{"path": f"steps.{index}.emit", "message": str(exc)}]
    return []


def _errors(error: Any) -> list[dict[str, str]]:
    """One pydantic error as entries; the flow check names several paths in one message."""
    # a mapping's key that is refused is reported at the key (not at "<key>.[key]")
    path = ".".join(str(p) for p in error["loc"] if p != "[key]") or "(journey)"
    message = str(error["msg"]).removeprefix("Value error, ")
    if path == "(journey)" and message.startswith("steps."):
        return [
            {"path": where, "message": what}
            for where, _, what in (part.partition(": ") for part in message.split("; "))
        ]
    return [{"path": path, "message": message}]


def parse_document(text: str, source: str = "<text>") -> dict[str, Any]:
    """A YAML or JSON journey document as a mapping (JSON is YAML)."""
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise Invalid(
            [{"path": "(document)", "message": f"{source}: not YAML or JSON: {exc}"}]
        ) from None
    if not isinstance(loaded, dict):
        raise Invalid([{"path": "(document)", "message": f"{source}: expected a mapping"}])
    if _too_big(loaded):  # YAML aliases can make a small text a huge document
        raise Invalid(
            [{"path": "(document)", "message": f"{source}: more than {MAX_NODES} values"}]
        )
    return loaded


MAX_NODES = 20_000  # values in one document, aliases expanded (a journey has a few hundred)


def _too_big(document: Any) -> bool:
    """Whether ``document`` holds more than :data:`MAX_NODES` values (stops counting there)."""
    pending, count = [document], 0
    while pending:
        value = pending.pop()
        count += 1
        if count > MAX_NODES:
            return True
        if isinstance(value, dict):
            pending += value.values()
        elif isinstance(value, list):
            pending += value
    return False


def schema() -> dict[str, Any]:
    """The JSON Schema of a journey document."""
    return Journey.model_json_schema(by_alias=True)
