"""A journey document: validated with every error and its path, read from YAML or JSON, and
published as a JSON Schema that matches the model."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # check-jsonschema brings it, untyped
import pytest
import yaml

from services.rules.journeys.definition import (
    Invalid,
    Journey,
    parse_document,
    parse_duration,
    schema,
    validate,
)
from shared.templates import TEMPLATE_ROOT
from tests.unit.rules.journeys.builders import document, message, send

EXAMPLES = sorted((Path(__file__).parents[4] / "journeys").glob("*.yaml"))


def errors_of(doc: dict[str, Any], template_root: Path | None = None) -> dict[str, str]:
    with pytest.raises(Invalid) as refused:
        validate(doc, template_root)
    found = refused.value.errors
    paths = [e["path"] for e in found]
    assert len(paths) == len(set(paths)), f"an error reported twice: {found}"
    return {e["path"]: e["message"] for e in found}


def test_every_error_of_a_document_is_reported_at_once_with_its_path() -> None:
    doc = document(
        {"id": "pick", "branch": {"when": "subject.tier == 'A'", "then": "pick", "else": "gone"}},
        {"id": "pick", "send": {"kind": "task", "to": "customer", "message": message()}},
        {"id": "wait", "wait_for": {"event": "customer.interaction", "timeout": "7 days"}},
        {
            "id": "zh",
            "send": {"to": "owner", "message": {"zh-CN": {"subject": "你好", "body": "x"}}},
        },
        {"id": "tpl", "send": {"to": "owner", "template": "no_such_template"}},
        {
            "id": "tier",
            "emit": {
                "type": "customer.tier_changed",
                "data": {
                    "tier": "Z",
                    "recency_score": 1,
                    "frequency_score": 1,
                    "monetary_score": 1,
                },
            },
        },
        trigger={"event": "customer.ordered"},
        goal={"when": "subject.tier =="},
    )
    found = errors_of(doc, TEMPLATE_ROOT)
    assert set(found) == {
        "trigger.event",
        "goal.when",
        "steps.0.branch.then",
        "steps.0.branch.else",
        "steps.1.id",
        "steps.1.send",
        "steps.2.wait_for.timeout",
        "steps.3.send",
        "steps.4.send.template",
        "steps.5.emit.data.tier",
    }
    assert "unknown event type 'customer.ordered'" in found["trigger.event"]
    assert found["goal.when"].startswith("does not parse")
    assert "'pick' is not a later step" in found["steps.0.branch.then"]
    assert found["steps.0.branch.else"] == "no step 'gone'"
    assert found["steps.1.id"] == "'pick' is used by an earlier step"
    assert "a task goes to staff" in found["steps.1.send"]
    assert "not a duration ('7 days')" in found["steps.2.wait_for.timeout"]
    assert "needs its en text" in found["steps.3.send"]
    assert "no template 'no_such_template'" in found["steps.4.send.template"]
    assert "'A', 'B' or 'C'" in found["steps.5.emit.data.tier"]


def test_the_flow_errors_of_an_otherwise_valid_document_are_each_reported() -> None:
    doc = document(
        {
            "id": "a",
            "wait_for": {"event": "customer.interaction", "timeout": "1d", "on_event": "a"},
        },
        {"id": "a", **send()},
        {"id": "b", "branch": {"when": "true", "then": "a", "else": "next"}},
    )
    assert errors_of(doc) == {
        "steps.0.wait_for.on_event": "'a' is not a later step (journeys only move forward)",
        "steps.1.id": "'a' is used by an earlier step",
        "steps.2.branch.then": "'a' is not a later step (journeys only move forward)",
    }


def test_an_emitted_event_missing_its_fields_names_each_and_one_about_another_kind_is_refused() -> (
    None
):
    doc = document({"emit": {"type": "customer.tier_changed", "data": {"tier": "A"}}})
    assert set(errors_of(doc)) == {
        "steps.0.emit.data.recency_score",
        "steps.0.emit.data.frequency_score",
        "steps.0.emit.data.monetary_score",
    }
    channel = {**document({"emit": {"type": "customer.churn_risk_changed"}}), "subject": "channel"}
    assert errors_of(channel) == {
        "steps.0.emit": "upkeep.customer.churn_risk_changed.v1 is about a customer, not a channel"
    }


def test_an_inline_text_that_could_not_render_is_refused_at_its_locale_and_part() -> None:
    texts = {
        "en": {"subject": "Hi {{ subject.name", "body": "Dear {{ customer.name }}"},
        "zh-CN": {"subject": "{{ subject.nickname }}", "body": "{{ subject.name | shout }}"},
    }
    found = errors_of(document(send(message=texts)))
    assert found == {
        "steps.0.send.message.en.subject": "not a valid text: unexpected end of template, "
        "expected 'end of print statement'.",
        "steps.0.send.message.en.body": "unknown name 'customer' (use subject)",
        "steps.0.send.message.zh-CN.subject": "subject has no field 'nickname' (see "
        "docs/journeys.md)",
        "steps.0.send.message.zh-CN.body": "not a valid text: No filter named 'shout'.",
    }
    fine = "{{ subject.name | upper }} {% if subject.tier %}({{ subject.tier }}){% endif %}"
    validate(document(send(message={"en": {"subject": fine, "body": "{{ subject.contracts }}"}})))


def test_templates_are_looked_up_only_when_a_template_store_is_given() -> None:
    doc = document(send(template="renewal_reminder"), {"send": {"to": "owner", "template": "nope"}})
    assert validate(doc).steps[1].send is not None  # no store: not checked
    assert set(errors_of(doc, TEMPLATE_ROOT)) == {"steps.1.send.template"}


@pytest.mark.parametrize(
    ("changes", "path", "fragment"),
    [
        (
            {"trigger": {"event": "customer.upserted", "date": "customer.birthday"}},
            "trigger",
            "exactly one",
        ),
        ({"trigger": {"segment": "subject.tier == 'A'", "when": "true"}}, "trigger", "no when"),
        ({"trigger": {"date": "customer.anniversary"}}, "trigger.date", "Input should be"),
        (
            {"trigger": {"date": "contract.end_date", "offset_days": -400}},
            "trigger.offset_days",
            "greater than or equal to -366",
        ),
        (
            {"trigger": {"date": "contract.end_date", "at": "9 am"}},
            "trigger.at",
            "not a local time",
        ),
        ({"reentry": {"mode": "once_per"}}, "reentry", "needs a period"),
        ({"reentry": {"mode": "once", "period": "7d"}}, "reentry", "only once_per"),
        (
            {"reentry": {"max_concurrent": 0}},
            "reentry.max_concurrent",
            "greater than or equal to 1",
        ),
        ({"goal": {}}, "goal", "give an event, a when"),
        ({"on_update": "restart"}, "on_update", "'finish' or 'migrate'"),
        ({"name": "Not A Name"}, "name", "pattern"),
        ({"subject": "staff"}, "subject", "'customer' or 'channel'"),
        ({"colour": "red"}, "colour", "Extra inputs"),
        ({"steps": []}, "steps", "at least 1"),
    ],
)
def test_each_part_is_checked_at_its_own_path(
    changes: dict[str, Any], path: str, fragment: str
) -> None:
    found = errors_of({**document(send()), **changes})
    assert set(found) == {path}
    assert fragment in found[path]


@pytest.mark.parametrize(
    ("step", "path", "fragment"),
    [
        ({"id": "x"}, "steps.0", "exactly one of send, wait"),
        ({"id": "x", **send(), "exit": {}}, "steps.0", "exactly one of send, wait"),
        ({"id": "next", "exit": {}}, "steps.0", "'next' is reserved"),
        ({"id": "Bad Id", "exit": {}}, "steps.0.id", "pattern"),
        ({"id": "x", "wait": {}}, "steps.0.wait", "give for, until, or both"),
        ({"id": "x", "wait": {"for": "0d"}}, "steps.0.wait.for", "longer than zero"),
        ({"id": "x", "wait": {"until": "25:00"}}, "steps.0.wait.until", "not a local time"),
        ({"id": "x", "send": {"to": "owner"}}, "steps.0.send", "a template or a message"),
        (
            {"id": "x", "send": {"to": "owner", "template": "t", "message": message()}},
            "steps.0.send",
            "a template or a message",
        ),
        (
            {"id": "x", "send": {"kind": "chat", "to": "channel", "message": message()}},
            "steps.0.send",
            "a chat goes to staff",
        ),
        ({"id": "x", "send": {"to": "boss", "message": message()}}, "steps.0.send.to", "pattern"),
        (
            {"id": "x", **send(message={"de": {"subject": "s", "body": "b"}})},
            "steps.0.send.message.de",
            "'en' or 'zh-CN'",
        ),
        ({"id": "x", **send(due_in="soon")}, "steps.0.send.due_in", "not a duration"),
        ({"id": "x", "set": {}}, "steps.0.set", "give add_tags"),
        (
            {"id": "x", "branch": {"when": "os.getenv('HOME')"}},
            "steps.0.branch.when",
            "unknown name 'os'",
        ),
        (
            {"id": "x", "emit": {"type": "nothing.happened"}},
            "steps.0.emit.type",
            "unknown event type",
        ),
    ],
)
def test_each_kind_of_step_is_checked_at_its_own_path(
    step: dict[str, Any], path: str, fragment: str
) -> None:
    found = errors_of(document(step))
    assert set(found) == {path}, found
    assert fragment in found[path]


def test_durations_are_weeks_days_hours_and_minutes() -> None:
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("36h") == timedelta(hours=36)
    assert parse_duration("2w") == timedelta(weeks=2)
    assert parse_duration("1w2d") == timedelta(days=9)
    assert parse_duration("1d12h") == timedelta(hours=36)
    for wrong in ("", "7 days", "1.5d", "d", "2d1w", "-1d"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(wrong)


def test_a_yaml_and_a_json_document_read_as_the_same_journey() -> None:
    doc = document(
        send("customer", marketing=False),
        {"id": "later", "wait": {"for": "1d", "until": "09:00"}},
        {"id": "pick", "branch": {"when": 'subject.tier == "A"', "then": "next", "else": "bye"}},
        {"id": "bye", "exit": {}},
        goal={"event": "customer.interaction", "when": 'event.kind == "order"'},
    )
    from_yaml = validate(parse_document(yaml.safe_dump(doc, allow_unicode=True), "j.yaml"))
    from_json = validate(parse_document(json.dumps(doc), "j.json"))
    assert from_yaml == from_json
    assert from_yaml.steps[1].wait is not None
    assert (from_yaml.steps[1].wait.for_, from_yaml.steps[1].wait.until) == ("1d", "09:00")
    assert from_yaml.steps[2].branch is not None
    assert from_yaml.steps[2].branch.else_ == "bye"
    # what versions compare: the document as written (aliases), without the file's `enabled`
    again = validate({**from_yaml.definition(), "enabled": True})
    assert again.definition() == from_yaml.definition()
    assert again.enabled is True


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("name: [unclosed", "not YAML or JSON"),
        ("- a\n- b\n", "expected a mapping"),
        ("", "expected"),
    ],
)
def test_a_document_that_is_not_a_mapping_is_refused_at_the_document(
    text: str, fragment: str
) -> None:
    with pytest.raises(Invalid) as refused:
        parse_document(text, "broken.yaml")
    [error] = refused.value.errors
    assert error["path"] == "(document)"
    assert fragment in error["message"]
    assert "broken.yaml" in error["message"]


# -- the published JSON Schema ---------------------------------------------------------------


def test_the_schema_names_every_field_of_the_model_by_the_name_written() -> None:
    published = schema()
    fields = {(f.alias or name) for name, f in Journey.model_fields.items()}
    assert set(published["properties"]) == fields
    assert set(published["required"]) == {
        (f.alias or name) for name, f in Journey.model_fields.items() if f.is_required()
    }
    assert published["additionalProperties"] is False
    step = published["$defs"]["Step"]
    assert set(step["properties"]) == {
        "id",
        "send",
        "wait",
        "wait_for",
        "branch",
        "set",
        "emit",
        "exit",
    }
    assert "for" in published["$defs"]["Wait"]["properties"]
    assert "else" in published["$defs"]["Branch"]["properties"]
    assert set(
        published["$defs"]["Send"]["properties"]["message"]["anyOf"][0]["propertyNames"]["enum"]
    ) == {
        "en",
        "zh-CN",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_shipped_journey_is_valid_by_the_schema_and_the_model(path: Path) -> None:
    doc = parse_document(path.read_text(encoding="utf-8"), path.name)
    jsonschema.validate(doc, schema())
    journey = validate(doc, TEMPLATE_ROOT)
    jsonschema.validate(journey.definition(), schema())


@pytest.mark.parametrize(
    "changes",
    [
        {"colour": "red"},
        {"subject": "staff"},
        {"steps": []},
        {"on_update": "restart"},
        {"reentry": {"mode": "sometimes"}},
        {"steps": [{"id": "x", "send": {"kind": "fax", "message": message()}}]},
    ],
)
def test_what_the_schema_refuses_the_model_refuses(changes: dict[str, Any]) -> None:
    doc = {**document(send()), **changes}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema())
    with pytest.raises(Invalid):
        validate(doc)
