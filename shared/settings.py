"""Configuration: the only module in Upkeep that reads the environment.

Shared infrastructure settings use the ``UPKEEP_KAFKA_`` / ``UPKEEP_MONGO_`` / ``UPKEEP_LOG_``
prefixes so one ``.env`` file serves every service; each service adds its own settings class with
its own prefix (``UPKEEP_INGEST_`` ...) by subclassing :class:`ServiceSettings`.
"""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "password", "example"})


def refuse_placeholder(value: SecretStr | None, name: str) -> SecretStr | None:
    """Refuse secrets that were obviously copied from an example file."""
    text = value.get_secret_value().strip().lower() if value is not None else ""
    if text in PLACEHOLDER_SECRETS or text.startswith("change-me"):  # deploy/.env.example
        raise ValueError(f"{name} is a placeholder; set a real secret")
    return value


class KafkaSettings(BaseSettings):
    """How to reach Kafka. Security options map one to one onto aiokafka's arguments."""

    model_config = SettingsConfigDict(env_prefix="UPKEEP_KAFKA_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    client_id_prefix: str = "upkeep"
    request_timeout_ms: int = Field(default=30_000, ge=1_000)

    @field_validator("sasl_password")
    @classmethod
    def _real_password(cls, value: SecretStr | None) -> SecretStr | None:
        return refuse_placeholder(value, "UPKEEP_KAFKA_SASL_PASSWORD")


class MongoSettings(BaseSettings):
    """How to reach MongoDB (any server speaking the MongoDB wire protocol)."""

    model_config = SettingsConfigDict(env_prefix="UPKEEP_MONGO_", extra="ignore")

    uri: SecretStr = SecretStr("mongodb://127.0.0.1:27017")
    database: str = "upkeep"
    server_selection_timeout_ms: int = Field(default=5_000, ge=100)

    @field_validator("uri")
    @classmethod
    def _real_uri(cls, value: SecretStr) -> SecretStr:
        uri = value.get_secret_value()
        if not uri.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("UPKEEP_MONGO_URI must start with mongodb:// or mongodb+srv://")
        if ":changeme@" in uri:
            raise ValueError("UPKEEP_MONGO_URI carries a placeholder password")
        return value


class LogSettings(BaseSettings):
    """Logging: JSON lines on stderr."""

    model_config = SettingsConfigDict(env_prefix="UPKEEP_LOG_", extra="ignore")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = True


class TopicSettings(BaseSettings):
    """Topic names (fixed by the design; overridable so tests can isolate themselves)."""

    model_config = SettingsConfigDict(env_prefix="UPKEEP_TOPIC_", extra="ignore")

    raw_customer: str = "upkeep.raw.customer"
    raw_channel: str = "upkeep.raw.channel"
    events: str = "upkeep.events.v1"
    actions: str = "upkeep.actions.v1"
    deliveries: str = "upkeep.deliveries.v1"
    dlq: str = "upkeep.dlq.v1"
    # internal to rules: the timers each transaction fired (see services.rules.ticklog)
    rules_ticks: str = "upkeep.rules.ticks.v1"


DEFAULT_REPLAY_HORIZON_DAYS = 400  # a year of reminders, with a month to spare


class RetentionSettings(BaseSettings):
    """How far back anything may be replayed: one horizon for every service.

    It sets the retention of the topics a replay reads (``upkeep.events.v1``,
    ``upkeep.actions.v1``, ``upkeep.deliveries.v1``) and how long MongoDB keeps what makes a
    replay harmless (ingest's de-duplication claims, the notifier's final ledger entries and
    completed tasks, analytics' fact claims): a little longer than the topics, see
    :mod:`shared.retention`. Read by every service and by ``python -m shared.kafka.topics``
    from the same variable, ``UPKEEP_REPLAY_HORIZON_DAYS``.
    """

    model_config = SettingsConfigDict(env_prefix="UPKEEP_", extra="ignore")

    # at least the dead letters' 30 days, so a dead letter re-driven within its retention still
    # meets the claims of what did get through (and far more than the raw topics' 7 days)
    replay_horizon_days: int = Field(default=DEFAULT_REPLAY_HORIZON_DAYS, ge=30, le=3650)


class ServiceSettings(BaseSettings):
    """What every service has: a name, an HTTP port, an instance id and the shared parts."""

    model_config = SettingsConfigDict(extra="ignore")

    service_name: str = "upkeep"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    instance_id: str = Field(default_factory=socket.gethostname)
    consumer_group: str = ""
    batch_max_records: int = Field(default=500, ge=1, le=10_000)
    batch_timeout_ms: int = Field(default=200, ge=1)
    shutdown_grace_s: float = Field(default=20.0, gt=0)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    mongo: MongoSettings = Field(default_factory=MongoSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)

    @property
    def group_id(self) -> str:
        return self.consumer_group or f"upkeep-{self.service_name}"
