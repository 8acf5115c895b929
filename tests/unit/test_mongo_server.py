"""The local MongoDB-wire server's amortised pruning of retryable-write records keeps what a
client can observe: a retry within the lifetime finds its reply, expired records go, the map
stays bounded; only the work per write changes."""

from __future__ import annotations

from typing import Any

from secantus import transactions

from deploy.local import mongo_server
from deploy.local.mongo_server import CAP, LIFETIME_S, PRUNE_EVERY_S, prune_amortised


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def registry(clock: Clock) -> Any:
    return transactions.TransactionRegistry(time_func=clock)


def record(reg: Any, n: int) -> None:
    reg.record_retryable(b"session", n, b"cmd", {"ok": 1.0, "n": 1})


def test_the_patch_replaces_the_servers_prune() -> None:
    original = transactions.TransactionRegistry._prune_retryable_locked
    try:
        mongo_server.patch()
        assert transactions.TransactionRegistry._prune_retryable_locked is prune_amortised
    finally:
        transactions.TransactionRegistry._prune_retryable_locked = original


def test_a_retry_within_the_lifetime_gets_the_original_reply_and_an_expired_one_does_not(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(
        transactions.TransactionRegistry, "_prune_retryable_locked", prune_amortised
    )
    clock = Clock()
    reg = registry(clock)
    record(reg, 1)
    clock.now += LIFETIME_S - 5
    assert reg.retryable_reply(b"session", 1, b"cmd") == {"ok": 1.0, "n": 1}
    clock.now += 5 + PRUNE_EVERY_S + 0.1
    assert reg.retryable_reply(b"session", 1, b"cmd") is None
    assert reg._retryable == {}


def test_expired_records_are_swept_at_most_once_a_second_but_all_of_them(monkeypatch: Any) -> None:
    monkeypatch.setattr(
        transactions.TransactionRegistry, "_prune_retryable_locked", prune_amortised
    )
    clock = Clock()
    reg = registry(clock)
    for n in range(100):
        record(reg, n)
    clock.now += LIFETIME_S + 1
    record(reg, 100)  # the sweep runs: the 100 old ones go
    assert list(reg._retryable) == [(b"session", 100)]


def test_the_map_stays_under_the_cap_trimming_the_oldest_in_chunks(monkeypatch: Any) -> None:
    monkeypatch.setattr(
        transactions.TransactionRegistry, "_prune_retryable_locked", prune_amortised
    )
    clock = Clock()
    reg = registry(clock)
    trims = 0
    for n in range(CAP + 2_000):
        clock.now += 0.001
        before = len(reg._retryable)
        record(reg, n)
        trims += len(reg._retryable) < before
        assert len(reg._retryable) <= CAP
    assert trims == 2  # once at CAP + 1, once more 1,000 writes later: not on every write
    newest = CAP + 2_000 - 1
    assert (b"session", newest) in reg._retryable
    assert (b"session", 0) not in reg._retryable
