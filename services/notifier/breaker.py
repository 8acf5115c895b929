"""A circuit breaker per provider (an SMTP server, a webhook or chat host).

After ``failures`` consecutive transient failures the circuit opens: for ``cooldown`` nothing
is sent to that provider, and what is due for it is deferred to the moment the circuit closes
again, without spending one of its attempts. Then messages flow again ("half open"); the first
failure re-opens the circuit at once, the first success closes it. Small enough to keep here
rather than add a dependency (the maintained breaker libraries are synchronous or tied to a
framework).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prometheus_client import Gauge

OPEN = Gauge(
    "upkeep_notifier_circuit_open",
    "1 while the circuit to a provider is open (deliveries to it are paused).",
    ["provider"],
)


@dataclass
class _Circuit:
    failures: int = 0
    open_until: datetime | None = None


@dataclass
class Breakers:
    failures: int = 5
    cooldown: timedelta = timedelta(seconds=60)
    _circuits: dict[str, _Circuit] = field(default_factory=dict)

    def closed_at(self, provider: str, now: datetime) -> datetime | None:
        """``None`` if we may send now; else when the circuit lets messages through again."""
        circuit = self._circuits.get(provider)
        if circuit is None or circuit.open_until is None:
            return None
        if circuit.open_until <= now:
            OPEN.labels(provider).set(0)  # half open: messages flow again
            return None
        return circuit.open_until

    def failed(self, provider: str, now: datetime) -> None:
        circuit = self._circuits.setdefault(provider, _Circuit())
        circuit.failures += 1
        if circuit.failures >= self.failures:
            circuit.open_until = now + self.cooldown
            OPEN.labels(provider).set(1)

    def succeeded(self, provider: str) -> None:
        circuit = self._circuits.get(provider)
        if circuit is not None and (circuit.failures or circuit.open_until):
            self._circuits[provider] = _Circuit()
            OPEN.labels(provider).set(0)
