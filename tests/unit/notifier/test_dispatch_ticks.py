"""The dispatcher's ticks: the partitions they cover, a ledger that fails in the middle of one,
and when another tick is asked for (the world under test is in dispatch_world.py)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from tests.unit.notifier.dispatch_world import (
    LIMITS,
    T0,
    PooledMail,
    action,
    commit,
    make_world,
    outcomes,
    record,
    summary,
)

# partitions -----------------------------------------------------------------------------------


async def test_only_the_partitions_given_to_the_tick_are_dispatched() -> None:
    w = make_world()
    for n in range(3):
        await w.customer(f"C-{n}")
    await w.consume(
        *(record(action(f"birthday:C-{n}:2026", f"C-{n}"), partition=n) for n in range(3))
    )
    result = await commit(await w.dispatcher.tick({1}))
    assert summary(result) == [("birthday:C-1:2026", "sent", None)]
    assert [a for _, a in w.mail.delivered] == ["c-1@example.com"]
    assert w.entry("birthday:C-0:2026").state == "pending"
    assert w.entry("birthday:C-2:2026").state == "pending"

    assert (await commit(await w.dispatcher.tick(set()))).messages == []
    assert summary(await w.tick(0, 2)) == [
        ("birthday:C-0:2026", "sent", None),
        ("birthday:C-2:2026", "sent", None),
    ]
    assert w.mail.calls == 3


# a tick cut short, and when to tick again -----------------------------------------------------


async def test_a_ledger_that_fails_mid_tick_stops_new_sends_so_few_can_repeat() -> None:
    """MongoDB goes away in the middle of a tick: the send whose ledger write failed cannot be
    recorded (it will be sent again: the documented window), but no further send starts in
    that tick, so an outage repeats at most the sends already in flight, not the whole tick."""
    w = make_world(mail=PooledMail())  # one SMTP connection: sends happen one after another
    for n in range(8):
        await w.customer(f"C-{n}")
    await w.consume(*(record(action(f"birthday:C-{n}:2026", f"C-{n}")) for n in range(8)))
    real_save, saves = w.ledger.save, {"sent": 0}

    async def save(entry: Any) -> None:
        if entry.state == "sent":
            saves["sent"] += 1
            if saves["sent"] >= 3:
                raise ConnectionError("MongoDB went away")
        await real_save(entry)

    w.ledger.save = save  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await w.tick()
    assert len(w.mail.delivered) == 3  # two recorded, the third sent and not recorded
    w.ledger.save = real_save  # type: ignore[method-assign]
    again = await w.tick()
    # the unrecorded one is sent again (the window); the other five for the first time
    assert len(w.mail.delivered) == 3 + 6
    # every action's outcome is published once the ledger is back (the two recorded before too)
    assert sorted(o.key for o in outcomes(again) if o.outcome == "sent") == sorted(
        f"birthday:C-{n}:2026" for n in range(8)
    )
    keys = [m["X-Upkeep-Key"] for m, _ in w.mail.delivered]
    assert len(set(keys)) == 8


async def test_a_new_action_due_now_asks_for_a_tick_and_a_full_tick_for_another() -> None:
    w = make_world(limits=dataclasses.replace(LIMITS, per_partition=2))
    await w.customer()
    later = action("birthday:C-1:2027", due_at=T0 + timedelta(days=365))
    assert not (await w.consume(record(later))).tick_soon  # next year: the interval will do
    assert not (await w.consume(record(later))).tick_soon  # nor a repeat of what is recorded
    batch = [record(action(f"birthday:C-1:{year}")) for year in (2026, 2025, 2024)]
    assert (await w.consume(*batch)).tick_soon  # due now: tick at once
    first = await w.tick()
    assert (len(outcomes(first)), first.tick_soon) == (2, True)  # stopped at its limit
    second = await w.tick()
    assert (len(outcomes(second)), second.tick_soon) == (1, False)
