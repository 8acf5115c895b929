"""Rules configuration (environment prefix ``UPKEEP_RULES_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.apikeys import ApiKeySpec
from shared.settings import ServiceSettings
from shared.templates import TEMPLATE_ROOT

DEFAULT_RULES_FILE = Path(__file__).with_name("rules.yaml")
DEFAULT_JOURNEYS_DIR = Path(__file__).parents[2] / "journeys"  # the shipped examples


class RulesSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="UPKEEP_RULES_", extra="ignore")

    service_name: str = "rules"
    http_port: int = Field(default=8002, ge=0, le=65535)
    config_file: Path = DEFAULT_RULES_FILE
    # sections merged over config_file's, key by key (a deployment keeps only what it changes;
    # ``make up`` shortens the delays so that ``make demo`` shows an escalation in minutes)
    config_overlay: Path | None = None
    enabled: str | None = None  # comma-separated subset of rule names (RULES_ENABLED)
    tick_interval_s: float = Field(default=1.0, gt=0)
    timers_per_tick: int = Field(default=1000, ge=1)
    template_dir: Path = TEMPLATE_ROOT  # the notifier's templates: every rule's must be there
    # journey files applied at start-up (docs/journeys.md); none: only what the API stored
    journeys_dir: Path | None = DEFAULT_JOURNEYS_DIR
    api_keys: list[ApiKeySpec] = Field(default_factory=list)  # rules:read, rules:admin

    def enabled_rules(self) -> set[str] | None:
        if not self.enabled:
            return None
        return {name.strip() for name in self.enabled.split(",") if name.strip()}
