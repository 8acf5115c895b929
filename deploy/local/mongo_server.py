"""The embedded MongoDB-wire server (SecantusDB from PyPI), with its retryable-write records
pruned in amortised time.

SecantusDB 0.7.0b3 keeps each retryable write's reply for 30 minutes, up to 10,000 of them, like
mongod. But it prunes that map on *every* write: a scan of every record, and once the cap is
reached a sort of all 10,000 to drop the single oldest. Under a sustained write load that was
~40% of the server's CPU and made each write slower the longer the server had run (profiled with
py-spy while ``make bench-notifier`` ran: ``_prune_retryable_locked``). Here expired records are
dropped at most once a second, and a map over the cap is cut back to 90% of it, so the sort
runs once per 1,000 writes. What a client observes barely changes: a retry within the lifetime
still gets the original reply unless 9,000 to 10,000 newer writes came since (SecantusDB keeps
the newest 10,000; this keeps at least the newest 9,000), and records expire up to a second
late. A driver retries within seconds, long before either matters.

``python -m deploy.local.mongo_server`` takes the arguments of ``secantusd-py``.
"""

from __future__ import annotations

import sys
from typing import Any

from secantus import cli, transactions

PRUNE_EVERY_S = 1.0
LIFETIME_S: float = transactions._RETRYABLE_RECORD_LIFETIME_SECONDS
CAP: int = transactions._RETRYABLE_RECORD_MAX


def prune_amortised(registry: Any) -> None:
    """Replaces ``TransactionRegistry._prune_retryable_locked`` (called with its lock held)."""
    records: dict[Any, tuple[Any, float, Any]] = registry._retryable
    now = registry._time()
    if now - getattr(registry, "_upkeep_pruned_at", 0.0) >= PRUNE_EVERY_S:
        registry._upkeep_pruned_at = now
        cutoff = now - LIFETIME_S
        for key in [k for k, (_reply, at, _identity) in records.items() if at < cutoff]:
            del records[key]
    if len(records) > CAP:
        keep = int(CAP * 0.9)
        oldest = sorted(records.items(), key=lambda item: item[1][1])[: len(records) - keep]
        for key, _record in oldest:
            del records[key]


def patch() -> None:
    registry = transactions.TransactionRegistry
    if not hasattr(registry, "_prune_retryable_locked"):  # a SecantusDB that changed: say so
        raise RuntimeError("SecantusDB no longer has _prune_retryable_locked; revisit this patch")
    registry._prune_retryable_locked = prune_amortised


def main() -> int:
    patch()
    sys.argv[0] = "secantusd-py"
    result: int = cli.main()
    return result


if __name__ == "__main__":
    sys.exit(main())
