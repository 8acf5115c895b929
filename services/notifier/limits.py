"""How hard the dispatcher tries: attempts, backoff, how long a recipient may be unknown, how
much one tick takes on."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from services.notifier.errors import DeliveryError

RETRY_AFTER_CAP_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Limits:
    max_attempts: int = 8
    retry_base_s: float = 30.0
    retry_max_s: float = 3600.0
    unknown_recipient_wait: timedelta = timedelta(hours=1)
    unknown_recipient_retry: timedelta = timedelta(seconds=2)
    tick_budget_s: float = 30.0  # no new send starts after this long in one tick
    per_partition: int = 200

    def retry_in(self, attempts: int, exc: DeliveryError) -> float | None:
        """Seconds until the next attempt after ``attempts`` that failed (the last with
        ``exc``), or None to give up: a permanent error, or the attempts used up. The
        provider's ``Retry-After`` is honoured up to a day (a hostile or broken one must not
        park an entry for years, nor overflow the clock)."""
        if not exc.transient or attempts >= self.max_attempts:
            return None
        hint = min(getattr(exc, "retry_after", None) or 0.0, RETRY_AFTER_CAP_S)
        return max(self.backoff(attempts), hint)

    def backoff(self, attempts: int) -> float:
        """Exponential with full jitter: what tenacity's ``wait_random_exponential`` waits,
        computed here because an entry's retries outlive the process (they are ``next_at`` in
        the ledger), so no retrying loop is held open for it."""
        return random.uniform(0, min(self.retry_max_s, self.retry_base_s * 2 ** (attempts - 1)))
