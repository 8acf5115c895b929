"""The one expression language of journeys: CEL, in a sandbox — only ``subject``, ``event`` and
``now``, only the documented fields of a subject, no loops, a short list of functions — and how
its conditions evaluate over a subject's state."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.rules.journeys.expressions import (
    FUNCTIONS,
    MACROS,
    MAX_LENGTH,
    METHODS,
    SUBJECT_FIELDS,
    EvaluationError,
    ExpressionError,
    check,
    compile_condition,
    subject_view,
    values,
)
from services.rules.state import ChannelState, ContractState, CustomerState, SubjectState

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def refused(source: str) -> str:
    with pytest.raises(ExpressionError) as error:
        check(source)
    return str(error.value)


def customer_state(**changes: Any) -> SubjectState:
    fields: dict[str, Any] = {
        "customer_id": "C-1",
        "name": "Acme",
        "timezone": "Asia/Shanghai",
        "tier": "A",
        "tags": ["vip"],
        "labels": ["welcomed"],
        "region": "east-1",
        "attributes": {"segment": "smb"},
        "label_attributes": {"stage": "onboarded"},
        "orders": 3,
        "order_value": Decimal("1250.50"),
        "last_order_at": NOW - timedelta(days=40),
        "birthday": date(1990, 5, 1),
        "owner_id": "S-1",
    }
    fields.update(changes)
    contract = ContractState(
        contract_id="K-1", start_date=date(2025, 4, 1), end_date=date(2026, 3, 31)
    )
    return SubjectState(
        id="customer:C-1", customer=CustomerState(**fields), contracts={"K-1": contract}
    )


def holds(source: str, state: SubjectState | None = None, event: Any = None) -> bool:
    return compile_condition(source).test(values(state or customer_state(), NOW, event))


# -- the sandbox -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("__import__('os')", "function '__import__' is not allowed"),
        ("os", "unknown name 'os'"),
        ("x == 1", "unknown name 'x'"),
        ("self", "unknown name 'self'"),
        ("os.system('ls')", "unknown name 'os'"),
        ("[x]", "unknown name 'x'"),
    ],
)
def test_any_name_but_subject_event_and_now_is_refused(source: str, fragment: str) -> None:
    assert fragment in refused(source)


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("subject.password == 'x'", "subject has no field 'password'"),
        ("subject.email.contains('@')", "subject has no field 'email'"),
        ("has(subject.secret)", "subject has no field 'secret'"),
        ("subject.name.__class__ == 'x'", "field '__class__' is not allowed"),
        ("subject.__dict__ == {}", "field '__dict__' is not allowed"),
        ("event._private == 1", "field '_private' is not allowed"),
        ("subject.attributes.__globals__ == 1", "field '__globals__' is not allowed"),
    ],
)
def test_a_field_outside_the_documented_names_is_refused(source: str, fragment: str) -> None:
    assert fragment in refused(source)


def test_the_documented_subject_fields_are_what_a_condition_sees() -> None:
    assert set(subject_view(customer_state())) == SUBJECT_FIELDS
    channel = SubjectState(id="channel:CH-1", channel=ChannelState(channel_id="CH-1"))
    assert set(subject_view(channel)) == SUBJECT_FIELDS
    assert set(subject_view(SubjectState(id="customer:C-9"))) == SUBJECT_FIELDS
    for name in SUBJECT_FIELDS:
        check(f"has(subject.{name})")


@pytest.mark.parametrize("macro", sorted(MACROS))
def test_every_comprehension_is_refused_for_it_is_a_loop(macro: str) -> None:
    arguments = "t" if macro in ("map",) else "t == 'a'"
    message = refused(f"subject.tags.{macro}(t, {arguments})")
    assert f"{macro}() is a loop: not allowed" in message


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("getattr(subject, 'name') == 'x'", "function 'getattr' is not allowed"),
        ("dyn(subject) == subject", "function 'dyn' is not allowed"),
        ("type(subject) == 'map'", "function 'type' is not allowed"),
        ("exec('1') == 1", "function 'exec' is not allowed"),
        ("subject.name.lowerAscii() == 'acme'", "method 'lowerAscii' is not allowed"),
        ("subject.name.split(' ') == []", "method 'split' is not allowed"),
        ("subject.tags.join(',') == ''", "method 'join' is not allowed"),
        (".system('ls')", "qualified function calls are not allowed"),
    ],
)
def test_functions_and_methods_outside_the_short_list_are_refused(
    source: str, fragment: str
) -> None:
    assert fragment in refused(source)


def test_every_allowed_function_and_method_compiles() -> None:
    check("size(subject.tags) > 0 && int('1') == 1 && double(1) == 1.0 && uint(1) == 1u")
    check("string(1) == '1' && bool('true') && has(subject.tier) && matches(subject.name, 'A')")
    check("timestamp('2026-01-01T00:00:00Z') < now && duration('1h') > duration('1m')")
    check(
        "subject.name.contains('c') && subject.name.startsWith('A') && subject.name.endsWith('e')"
        " && subject.name.matches('^A') && subject.name.size() == 4 && now.getFullYear() == 2026"
        " && now.getMonth() == 2 && now.getDayOfMonth() == 0 && now.getDayOfWeek() == 0"
        " && now.getHours() == 12"
    )
    assert {"has", "size", "timestamp", "duration"} <= FUNCTIONS
    assert {"contains", "startsWith", "getHours"} <= METHODS


def test_several_problems_are_named_at_once() -> None:
    message = refused("os.path.exists(x) || subject.tags.all(t, t == 'a')")
    for fragment in (
        "unknown name 'os'",
        "unknown name 'x'",
        "all() is a loop",
        "unknown name 't'",
    ):
        assert fragment in message


def test_an_over_long_expression_is_refused_before_it_is_parsed() -> None:
    longest = "subject.tier == 'A'" + " " * (MAX_LENGTH - len("subject.tier == 'A'"))
    check(longest)
    assert refused(longest + " ") == f"longer than {MAX_LENGTH} characters"


@pytest.mark.parametrize("source", ["subject.tier ==", "1 +", "(((1)", "'unterminated", "a b c"])
def test_what_does_not_parse_is_refused(source: str) -> None:
    assert refused(source).startswith("does not parse")


@pytest.mark.parametrize(
    "source", ["(" * 495 + "true" + ")" * 495, "!" * 995 + "true", "[" * 480 + "]" * 480 + " == []"]
)
def test_deep_nesting_is_refused_or_false_never_a_crash(source: str) -> None:
    assert len(source) <= MAX_LENGTH
    try:
        condition = compile_condition(source)
    except ExpressionError:
        return
    with contextlib.suppress(EvaluationError):  # the rule takes it as false (and counts it)
        condition.test(values(customer_state(), NOW))


# -- evaluation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "subject.tier == 'A'",
        "subject.kind == 'customer' && subject.id == 'customer:C-1'",
        "subject.name == 'Acme' && subject.owner == 'S-1' && subject.timezone == 'Asia/Shanghai'",
        "subject.region.startsWith('east')",
        "subject.orders >= 3 && subject.order_value > 1000.0",
        "subject.attributes.segment == 'smb' && subject.attributes.stage == 'onboarded'",
        "subject.birthday == '1990-05-01'",
        "subject.contracts[0].end_date < '2026-04-01' && subject.contracts[0].status == 'active'",
        "subject.churn_risk == null && subject.at_risk == false",
        "size(subject.tags) == 2",
    ],
)
def test_a_subject_field_holds_the_state(source: str) -> None:
    assert holds(source)


def test_tags_of_the_profile_and_of_the_journeys_are_in_one_list() -> None:
    assert holds("'vip' in subject.tags && 'welcomed' in subject.tags")
    assert not holds("'gold' in subject.tags")
    assert not holds("'vip' in subject.tags", customer_state(tags=[], labels=[]))


def test_timestamps_compare_with_now_and_durations() -> None:
    assert holds("subject.last_order_at < now - duration('720h')")  # 40 days ago
    assert not holds("subject.last_order_at < now - duration('1440h')")
    assert holds("now > timestamp('2026-02-28T00:00:00Z')")
    assert holds("now.getHours() == 12 && now.getFullYear() == 2026")


def test_event_fields_are_the_payload() -> None:
    event = {"kind": "order", "amount": Decimal("120"), "occurred_at": NOW}
    assert holds("event.kind == 'order' && event.amount >= 100.0", event=event)
    assert holds("event.occurred_at == now", event=event)
    assert not holds("event.kind == 'call'", event=event)
    assert holds("has(event.kind)", event=event)
    assert not holds("has(event.kind)")  # no event: an empty map


@pytest.mark.parametrize(
    ("source", "event"),
    [
        ("subject.churn_risk > 0.5", None),  # null compared
        ("event.amount > 1.0", {}),  # a field the event does not have
        ("subject.contracts[5].status == 'active'", None),
        ("1 / (subject.orders - 3) == 1", None),
    ],
)
def test_a_condition_that_fails_at_run_time_is_an_evaluation_error(source: str, event: Any) -> None:
    with pytest.raises(EvaluationError, match="^" + re.escape(source)):
        holds(source, event=event)


def test_a_guarded_field_is_false_not_an_error() -> None:
    assert not holds("has(event.amount) && event.amount > 1.0", event={})
    assert not holds("subject.churn_risk != null && subject.churn_risk > 0.5")


def test_only_true_is_true() -> None:
    assert not holds("subject.tier")  # a string is not true
    assert not holds("subject.orders")
    assert not holds("subject.churn_risk")
    assert holds("true")
