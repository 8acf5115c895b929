"""Notifier configuration (environment prefix ``UPKEEP_NOTIFIER_``)."""

from __future__ import annotations

from datetime import time
from email.utils import parseaddr
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.notifier.templates import DEFAULT_ROOT
from shared.apikeys import ApiKeySpec
from shared.settings import ServiceSettings, refuse_placeholder

DEV_UNSUBSCRIBE_SECRET = "upkeep-local-development-unsubscribe-key"  # noqa: S105
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class NotifierSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="UPKEEP_NOTIFIER_", extra="ignore")

    service_name: str = "notifier"
    http_port: int = Field(default=8003, ge=0, le=65535)
    api_keys: list[ApiKeySpec] = Field(default_factory=list)  # notifier:admin, tasks:own
    template_dir: Path = DEFAULT_ROOT

    # e-mail (defaults: the local development SMTP server that `make up` starts)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_pool_size: int = Field(default=4, ge=1, le=64)
    smtp_timeout_s: float = Field(default=20.0, gt=0)
    mail_from: str = "Upkeep <upkeep@localhost>"
    message_id_domain: str = "upkeep.localhost"

    # one-click unsubscribe (RFC 8058): links point here and are signed with this secret
    public_base_url: str = "http://127.0.0.1:8003"
    unsubscribe_secret: SecretStr = SecretStr(DEV_UNSUBSCRIBE_SECRET)

    # webhooks (action kind "webhook") and chat bots
    webhook_url: str | None = None
    webhook_secrets: list[SecretStr] = Field(default_factory=list)  # whsec_…, newest first
    chat_secrets: dict[str, SecretStr] = Field(default_factory=dict)  # bot URL -> signing secret
    allow_private_destinations: bool = False  # webhooks/chat to private or loopback addresses
    http_timeout_s: float = Field(default=10.0, gt=0)

    # policy
    quiet_hours_start: time | None = time(21, 0)  # in the recipient's time zone
    quiet_hours_end: time | None = time(8, 0)
    quiet_hours_transactional: bool = True  # quiet hours hold back transactional messages too
    marketing_cap: int = Field(default=3, ge=0)  # marketing messages per recipient per window
    marketing_cap_days: int = Field(default=7, ge=1)

    # the daily digest: an owner's reminders by e-mail folded into one message at this local time
    digest_enabled: bool = False
    digest_time: time = time(8, 30)
    digest_rules: list[str] = Field(default_factory=list)  # empty: every rule's reminders

    # retries and dispatch
    max_attempts: int = Field(default=8, ge=1)
    retry_base_s: float = Field(default=30.0, gt=0)
    retry_max_s: float = Field(default=3600.0, gt=0)
    unknown_recipient_wait_s: float = Field(default=3600.0, gt=0)  # then the action fails
    unknown_recipient_retry_s: float = Field(default=2.0, gt=0)  # how often to look again
    breaker_failures: int = Field(default=5, ge=1)  # consecutive failures that open a circuit
    breaker_cooldown_s: float = Field(default=60.0, gt=0)
    dispatch_interval_s: float = Field(default=1.0, gt=0)
    dispatch_limit: int = Field(default=200, ge=1)  # ledger entries per partition per tick

    @model_validator(mode="after")
    def _signed_webhooks(self) -> NotifierSettings:
        if self.webhook_url and not self.webhook_secrets:
            raise ValueError("UPKEEP_NOTIFIER_WEBHOOK_SECRETS is required with a webhook URL")
        return self

    @model_validator(mode="after")
    def _cap_within_horizon(self) -> NotifierSettings:
        """Caps count sent entries in the ledger, which keeps them for the replay horizon."""
        if self.marketing_cap_days > self.retention.replay_horizon_days:
            raise ValueError(
                "UPKEEP_NOTIFIER_MARKETING_CAP_DAYS exceeds the ledger's retention "
                "(UPKEEP_REPLAY_HORIZON_DAYS)"
            )
        return self

    @model_validator(mode="after")
    def _public_unsubscribe(self) -> NotifierSettings:
        """Links that leave this machine are HTTPS and signed with a secret of your own."""
        url = urlsplit(self.public_base_url)
        if url.hostname in LOOPBACK:
            return self
        if url.scheme != "https":
            raise ValueError("UPKEEP_NOTIFIER_PUBLIC_BASE_URL must be https:// (RFC 8058)")
        if self.unsubscribe_secret.get_secret_value() == DEV_UNSUBSCRIBE_SECRET:
            raise ValueError("set UPKEEP_NOTIFIER_UNSUBSCRIBE_SECRET for a public base URL")
        return self

    @field_validator("mail_from")
    @classmethod
    def _one_ascii_sender(cls, value: str) -> str:
        """Checked here, once: a sender no message can carry would fail every e-mail."""
        _name, address = parseaddr(value)
        if "\r" in value or "\n" in value or not address.isascii() or "@" not in address:
            raise ValueError(
                "UPKEEP_NOTIFIER_MAIL_FROM must be one line with an ASCII address, "
                "e.g. 'Upkeep <upkeep@example.com>'"
            )
        return value

    @field_validator("smtp_password")
    @classmethod
    def _real_smtp_password(cls, value: SecretStr | None) -> SecretStr | None:
        return refuse_placeholder(value, "UPKEEP_NOTIFIER_SMTP_PASSWORD")

    @field_validator("unsubscribe_secret")
    @classmethod
    def _real_unsubscribe_secret(cls, value: SecretStr) -> SecretStr:
        refuse_placeholder(value, "UPKEEP_NOTIFIER_UNSUBSCRIBE_SECRET")
        return value
