"""A rule declares the templates it uses; the rules service refuses to start without them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.rules.registry import BUILTIN, check_templates, load_rules
from shared.templates import TEMPLATE_ROOT, missing_templates


@dataclass
class Needs:
    templates: dict[str, frozenset[str]] = field(default_factory=dict)
    name: str = "needs"


def test_every_built_in_rule_declares_templates_that_exist() -> None:
    rules = load_rules({})
    assert {rule.name for rule in rules} == set(BUILTIN)
    check_templates(rules, TEMPLATE_ROOT)  # raises otherwise
    emit_only = {"tiering", "channel-tiering"}  # they publish events, never messages
    assert all(rule.templates or rule.name in emit_only for rule in rules)


def test_a_rule_whose_template_is_missing_stops_the_start() -> None:
    rule = Needs({"renewal_reminder": frozenset(), "no_such_template": frozenset()})
    with pytest.raises(
        ValueError, match=r"'needs' uses templates missing .*\['no_such_template'\]"
    ):
        check_templates([rule], TEMPLATE_ROOT)  # type: ignore[list-item]


def test_a_rule_that_declares_nothing_is_refused() -> None:
    @dataclass
    class Silent:
        name: str = "silent"

    with pytest.raises(ValueError, match="declares no templates"):
        check_templates([Silent()], TEMPLATE_ROOT)  # type: ignore[list-item]


def test_a_template_folder_without_a_locale_is_missing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "ready" / "en").mkdir(parents=True)
    assert missing_templates(["empty", "ready", "absent"], tmp_path) == ["absent", "empty"]
