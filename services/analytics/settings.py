"""Analytics configuration (environment prefix ``UPKEEP_ANALYTICS_``)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from services.analytics.money import RateTable
from shared.events.fields import zone
from shared.settings import DEFAULT_REPLAY_HORIZON_DAYS, ServiceSettings


class AnalyticsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="UPKEEP_ANALYTICS_", extra="ignore")

    service_name: str = "analytics"
    http_port: int = Field(default=8004, ge=0, le=65535)
    reporting_timezone: str = "UTC"  # hour and day buckets are cut in this zone
    # hour buckets are deleted this long after their hour (reporting data, not a replay guard:
    # independent of the horizon); day buckets are kept
    hour_bucket_days: int = Field(default=DEFAULT_REPLAY_HORIZON_DAYS, ge=1, le=36_500)
    # minutes of manual work one automated touch saves, by delivery kind, and what an hour costs
    minutes_saved: dict[str, float] = Field(
        default_factory=lambda: {"email": 6.0, "chat": 4.0, "webhook": 3.0}
    )
    hourly_cost: float = Field(default=40.0, ge=0)
    cost_currency: str = "EUR"
    # exchange rates for cost and ROI ({"base": "CNY", "rates": {"USD": "7.1"}, "as_of": "…"});
    # none: amounts stay per currency, never added together
    rates: RateTable | None = None
    # budgets: how often they are checked, and the share of a period that must have gone by
    # before a forecast (rather than the amount used) raises an overrun alert
    budget_check_s: float = Field(default=60.0, gt=0)
    budget_min_elapsed: float = Field(default=0.2, ge=0, le=1)
    # managers' reports: how often due ones are looked for, the local hour they go out on the
    # day after their period, and the dashboard's address for their link (none: no link)
    report_check_s: float = Field(default=60.0, gt=0)
    report_send_hour: int = Field(default=7, ge=0, le=23)
    dashboard_url: str | None = None

    @field_validator("reporting_timezone")
    @classmethod
    def _iana(cls, value: str) -> str:
        try:
            zone(value)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"not an IANA time zone: {value}") from exc
        return value
