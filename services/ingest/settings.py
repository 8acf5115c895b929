"""Ingest configuration (environment prefix ``UPKEEP_INGEST_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from shared.apikeys import ApiKeySpec
from shared.events.fields import zone
from shared.settings import ServiceSettings

MAPPINGS_DIR = Path(__file__).with_name("mappings")  # the shipped examples


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="UPKEEP_INGEST_", extra="ignore")

    service_name: str = "ingest"
    http_port: int = Field(default=8001, ge=0, le=65535)
    api_keys: list[ApiKeySpec] = Field(default_factory=list)
    max_message_bytes: int = Field(default=256 * 1024, ge=1024)
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    max_batch_items: int = Field(default=500, ge=1, le=5000)
    default_source: str = "urn:upkeep:ingest"
    # the mapped sources' files (*.yaml), read again every few seconds; none: no mapped sources
    # (the shipped examples are in services/ingest/mappings: a mapping's topics must exist, so
    # a deployment points this at the folder of its own)
    mappings_dir: Path | None = None
    mappings_refresh_s: float = Field(default=5.0, gt=0)
    # the secrets that verify each http source's pushes ({"shop-push": ["whsec_…"]}, newest
    # first: during a rotation both verify)
    source_secrets: dict[str, list[SecretStr]] = Field(default_factory=dict)
    default_timezone: str | None = None
    phone_region: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    # de-duplication claims are kept for the replay horizon (UPKEEP_REPLAY_HORIZON_DAYS, see
    # shared.retention); the former UPKEEP_INGEST_DEDUP_RETENTION_DAYS is folded into it and
    # refused, so that nobody believes it still sets anything
    dedup_retention_days: int | None = None

    @field_validator("dedup_retention_days")
    @classmethod
    def _folded(cls, value: int | None) -> None:
        if value is not None:
            raise ValueError(
                "UPKEEP_INGEST_DEDUP_RETENTION_DAYS is gone: claims are kept for the replay "
                "horizon, UPKEEP_REPLAY_HORIZON_DAYS"
            )
        return None

    @field_validator("default_timezone")
    @classmethod
    def _iana(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                zone(value)
            except (KeyError, ValueError) as exc:  # ZoneInfoNotFoundError is a KeyError
                raise ValueError(f"not an IANA time zone: {value}") from exc
        return value
