"""The circuit breaker per provider and its gauge: open after N failures, half open after the
cooldown (the gauge says so even when no message has been tried since), closed by a success."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.notifier.breaker import OPEN, Breakers

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)


def gauge(provider: str) -> float:
    return float(OPEN.labels(provider)._value.get())


def test_opens_after_consecutive_failures_and_reports_half_open_after_the_cooldown() -> None:
    breakers = Breakers(failures=3, cooldown=timedelta(seconds=60))
    provider = "smtp:mail.example.com:587"
    for n in range(2):
        breakers.failed(provider, T0 + timedelta(seconds=n))
        assert breakers.closed_at(provider, T0 + timedelta(seconds=n)) is None
    breakers.failed(provider, T0 + timedelta(seconds=2))
    reopens = T0 + timedelta(seconds=62)
    assert breakers.closed_at(provider, T0 + timedelta(seconds=3)) == reopens
    assert gauge(provider) == 1
    # the cooldown is over: messages may flow, and the gauge no longer says "paused"
    assert breakers.closed_at(provider, reopens) is None
    assert gauge(provider) == 0
    # the first failure when half open re-opens it at once
    breakers.failed(provider, reopens)
    assert breakers.closed_at(provider, reopens) == reopens + timedelta(seconds=60)
    assert gauge(provider) == 1
    breakers.succeeded(provider)
    assert breakers.closed_at(provider, reopens) is None
    assert gauge(provider) == 0


def test_providers_are_independent() -> None:
    breakers = Breakers(failures=1, cooldown=timedelta(seconds=30))
    breakers.failed("webhook:a.example.com", T0)
    assert breakers.closed_at("webhook:a.example.com", T0) is not None
    assert breakers.closed_at("webhook:b.example.com", T0) is None
