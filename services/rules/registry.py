"""Which rules exist and which of them run.

Built-in rules are listed in :data:`BUILTIN` — the one visible place to add a rule. Rules shipped
in another package register a factory in the ``upkeep.rules`` entry point group::

    [project.entry-points."upkeep.rules"]
    vip-call = "acme_rules.vip:make_rule"      # make_rule(config: dict) -> Rule

Each rule reads its section of ``rules.yaml`` (``enabled: false`` switches it off); the service
can also run a subset by name (``UPKEEP_RULES_ENABLED=renewal,birthday``), so a team can deploy
its own rule service from the same image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml

from services.rules.builtin.assignment import Assignment, AssignmentConfig
from services.rules.builtin.birthday import BirthdayConfig, BirthdaysAndAnniversaries
from services.rules.builtin.channel_health import ChannelHealth, ChannelHealthConfig
from services.rules.builtin.channel_tiering import ChannelTiering, ChannelTieringConfig
from services.rules.builtin.followup import AfterSalesFollowUp, FollowUpConfig
from services.rules.builtin.renewal import ContractRenewal, RenewalConfig
from services.rules.builtin.revisit import Revisit, RevisitConfig
from services.rules.builtin.task_escalation import TaskEscalation, TaskEscalationConfig
from services.rules.builtin.tiering import Tiering, TieringConfig
from services.rules.churn.rule import ChurnConfig, ChurnRisk
from services.rules.journeys.runner import Journeys, JourneysConfig
from services.rules.sdk import Rule
from shared.templates import missing_templates

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "upkeep.rules"
RuleFactory = Callable[[Mapping[str, Any]], Rule]

BUILTIN: dict[str, RuleFactory] = {
    "renewal": lambda cfg: ContractRenewal(RenewalConfig.model_validate(cfg)),
    "birthday": lambda cfg: BirthdaysAndAnniversaries(BirthdayConfig.model_validate(cfg)),
    "channel-health": lambda cfg: ChannelHealth(ChannelHealthConfig.model_validate(cfg)),
    "channel-tiering": lambda cfg: ChannelTiering(ChannelTieringConfig.model_validate(cfg)),
    "followup": lambda cfg: AfterSalesFollowUp(FollowUpConfig.model_validate(cfg)),
    "tiering": lambda cfg: Tiering(TieringConfig.model_validate(cfg)),
    "churn": lambda cfg: ChurnRisk(ChurnConfig.model_validate(cfg)),
    "assignment": lambda cfg: Assignment(AssignmentConfig.model_validate(cfg)),
    "revisit": lambda cfg: Revisit(RevisitConfig.model_validate(cfg)),
    "task-escalation": lambda cfg: TaskEscalation(TaskEscalationConfig.model_validate(cfg)),
    # operator-defined flows (docs/journeys.md): one rule runs them all
    "journeys": lambda cfg: Journeys(config=JourneysConfig.model_validate(cfg)),
}


def read_config(path: Path | None, overlay: Path | None = None) -> dict[str, dict[str, Any]]:
    """The per-rule sections of ``rules.yaml`` (empty when there is no file), with the keys of
    ``overlay``'s sections replacing theirs."""
    merged = _sections(path)
    for name, section in _sections(overlay).items():
        merged[name] = {**merged.get(name, {}), **section}
    return merged


def _sections(path: Path | None) -> dict[str, dict[str, Any]]:
    if path is None or not path.exists():
        return {}
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict) or not all(isinstance(v, dict) for v in loaded.values()):
        raise ValueError(f"{path}: expected a mapping of rule name to settings")
    return {str(k): dict(v) for k, v in loaded.items()}


def discovered() -> dict[str, RuleFactory]:
    """Factories from the entry point group; one that fails to load is skipped and logged."""
    found: dict[str, RuleFactory] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found[point.name] = point.load()
        except Exception:
            log.exception("rule entry point failed to load", extra={"rule": point.name})
    return found


def load_rules(
    config: Mapping[str, Mapping[str, Any]], enabled: set[str] | None = None
) -> list[Rule]:
    """Instantiate every known rule that is enabled in ``config`` and (if given) ``enabled``."""
    factories = {**discovered(), **BUILTIN}  # a plug-in cannot replace a built-in rule
    unknown = (enabled or set()) - set(factories)
    if unknown:
        raise ValueError(f"unknown rules in RULES_ENABLED: {sorted(unknown)}")
    rules = []
    for name, factory in factories.items():
        section = dict(config.get(name, {}))
        if not section.pop("enabled", True) or (enabled is not None and name not in enabled):
            continue
        rule = factory(section)
        if rule.name != name:
            raise ValueError(f"rule registered as {name!r} calls itself {rule.name!r}")
        rules.append(rule)
    return rules


def check_templates(rules: Iterable[Rule], root: Path) -> None:
    """Refuse rules whose templates are not in the template store (at start-up, not at the
    first reminder a year from now)."""
    for rule in rules:
        declared = getattr(rule, "templates", None)
        if declared is None:
            raise ValueError(f"rule {rule.name!r} declares no templates (see docs/rules.md)")
        missing = missing_templates(declared, root)
        if missing:
            raise ValueError(f"rule {rule.name!r} uses templates missing from {root}: {missing}")
