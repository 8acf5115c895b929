"""The worked example of docs/rules.md, run as it is written there (the doc must not rot): its
rule and its harness test are the two Python blocks under "A worked example"."""

from __future__ import annotations

import re
import sys
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.rules.sdk import Rule
from services.rules.testing import RuleHarness

DOC = Path(__file__).parents[3] / "docs" / "rules.md"
T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)


def worked_example() -> tuple[str, str]:
    section = DOC.read_text(encoding="utf-8").split("## A worked example", 1)[1]
    rule, test = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[:2]
    return rule, test


def define_rule() -> Any:
    """The rule block, as a module of its own (dataclasses look their module up)."""
    module = types.ModuleType("docs_rules_worked_example")
    sys.modules[module.__name__] = module
    exec(worked_example()[0], module.__dict__)  # our own documentation
    return module.FirstOrderCall


FirstOrderCall = define_rule()


def test_the_worked_example_is_a_rule_and_declares_its_template() -> None:
    rule = FirstOrderCall()
    assert isinstance(rule, Rule)
    assert rule.templates == {"first_order_call": frozenset({"customer_name"})}


def test_the_worked_example_test_passes_as_written() -> None:
    namespace = {"RuleHarness": RuleHarness, "FirstOrderCall": FirstOrderCall, "T0": T0}
    namespace["timedelta"] = timedelta
    exec(worked_example()[1], namespace)


def test_the_worked_example_calls_a_week_after_the_first_order_only() -> None:
    h = RuleHarness(FirstOrderCall())
    h.send("customer.upserted", at=T0, customer_id="C-1", name="Li", timezone="UTC", owner_id="S-1")
    for n, day in enumerate((0, 1)):
        at = T0 + timedelta(days=day)
        h.send(
            "customer.interaction",
            at=at,
            customer_id="C-1",
            interaction_id=f"I-{n}",
            kind="order",
            occurred_at=at.isoformat(),
        )
    (call,) = h.advance(to=T0 + timedelta(days=8))
    assert (call.kind, call.recipient.kind, call.recipient.id) == ("task", "staff", "S-1")
    assert call.due_at == T0 + timedelta(days=7)
    assert call.data == {"customer_name": "Li"}


def make_rule(config: object) -> Rule:
    """An entry-point factory, as a plug-in package would ship it."""
    rule: Rule = FirstOrderCall()  # a class defined by the doc's code at run time: untyped here
    return rule


def test_plugin_rules_are_found_through_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    from services.rules import registry

    points = [
        EntryPoint("first-order-call", f"{__name__}:make_rule", registry.ENTRY_POINT_GROUP),
        EntryPoint("broken", "no_such_package.rules:make_rule", registry.ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: points)
    names = [rule.name for rule in registry.load_rules({})]
    assert "first-order-call" in names  # loaded through EntryPoint.load, like pip-installed ones
    assert "broken" not in names  # a plug-in that fails to import is skipped
    assert [r.name for r in registry.load_rules({}, enabled={"first-order-call"})] == [
        "first-order-call"
    ]
