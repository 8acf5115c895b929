"""The dispatcher's daily digest of staff reminders (the world under test is in
dispatch_world.py)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from services.notifier.digest import Digest
from tests.unit.notifier.dispatch_world import (
    TEMPLATES,
    action,
    make_world,
    outcomes,
    record,
    summary,
)

# the daily digest ----------------------------------------------------------------------------


def reminder(n: int, owner: str = "S-1") -> dict[str, Any]:
    return action(
        f"renewal:K-{n}:2026-07-01:30d",
        owner,
        template="renewal_reminder",
        priority="transactional",
        recipient_kind="staff",
        data=TEMPLATES.sample("renewal_reminder") | {"contract_id": f"K-{n}"},
    )


async def test_an_owners_reminders_are_folded_into_one_daily_digest() -> None:
    # 08:30 in Shanghai is 00:30 UTC; T0 is 20:00 there, so the digest goes out tomorrow
    w = make_world(digest=Digest(time(8, 30), grace=timedelta(minutes=5)))
    await w.staff("S-1", email="wang.fang@example.com")
    await w.consume(*(record(reminder(n), partition=n % 2) for n in range(3)))
    held = outcomes(await w.tick(0, 1))
    assert {(o.outcome, o.reason) for o in held} == {("deferred", "digest")}
    moment = datetime(2026, 6, 2, 0, 30, tzinfo=UTC)
    digest = w.entry("digest:S-1:2026-06-02")
    assert (digest.next_at, digest.partition) == (moment, 0)

    w.clock.now = moment
    assert summary(await w.tick(0, 1)) == [("digest:S-1:2026-06-02", "sent", None)]
    # the members' outcomes are published by their partitions' owners at the next tick
    sent = await w.tick(0, 1)
    assert {k for k, o, r in summary(sent) if (o, r) == ("sent", "digest")} == {
        f"renewal:K-{n}:2026-07-01:30d" for n in range(3)
    }
    (mail, to) = w.mail.delivered[0]
    assert len(w.mail.delivered) == 1
    assert to == "wang.fang@example.com"
    body = mail.get_body(("plain",))
    assert body is not None
    assert all(f"K-{n}" in body.get_content() for n in range(3))

    # a reminder that arrives after today's digest went out waits for tomorrow's
    await w.consume(record(reminder(9), partition=1))
    (later,) = outcomes(await w.tick(0, 1))
    assert (later.outcome, later.reason) == ("deferred", "digest")
    assert later.next_at == datetime(2026, 6, 3, 0, 35, tzinfo=UTC)
    w.clock.now = datetime(2026, 6, 3, 0, 35, tzinfo=UTC)
    assert summary(await w.tick(0, 1)) == [("digest:S-1:2026-06-03", "sent", None)]
    assert summary(await w.tick(0, 1)) == [("renewal:K-9:2026-07-01:30d", "sent", "digest")]
    assert len(w.mail.delivered) == 2


async def test_a_member_its_digest_left_behind_is_delivered_on_its_own() -> None:
    w = make_world(digest=Digest(time(8, 30), grace=timedelta(minutes=5)))
    await w.staff("S-1", email="wang.fang@example.com")
    await w.consume(record(reminder(1)))
    await w.tick()
    # the digest went out without it (it joined between the digest's read and its send)
    w.ledger.entries["digest:S-1:2026-06-02"].state = "sent"
    w.clock.now = datetime(2026, 6, 2, 0, 35, tzinfo=UTC)
    assert summary(await w.tick()) == [("renewal:K-1:2026-07-01:30d", "sent", None)]
    assert len(w.mail.delivered) == 1


async def test_customer_mail_and_other_kinds_are_never_digested() -> None:
    w = make_world(digest=Digest(time(8, 30)))
    await w.customer()
    await w.staff("S-1", email="wang.fang@example.com")
    await w.consume(
        record(action("birthday:C-1:2026")),
        record(dict(reminder(1), kind="task")),
    )
    assert summary(await w.tick()) == [
        ("birthday:C-1:2026", "sent", None),
        ("renewal:K-1:2026-07-01:30d", "sent", None),
    ]


async def test_a_managers_report_and_a_budget_alert_are_never_folded() -> None:
    w = make_world(digest=Digest(time(8, 30), grace=timedelta(minutes=5)))
    await w.staff("S-1", email="wang.fang@example.com")
    report = action(
        "report:weekly:2026-W22:S-1",
        "S-1",
        template="manager_report",
        priority="transactional",
        recipient_kind="staff",
        data=TEMPLATES.sample("manager_report"),
    ) | {
        "purpose": "report",
        "attachments": [{"filename": "r.csv", "media_type": "text/csv", "content": "a,b\r\n"}],
    }
    alert = action(
        "budget-overrun:B-1:2026-06:S-1",
        "S-1",
        template="budget_overrun",
        priority="transactional",
        recipient_kind="staff",
        data=TEMPLATES.sample("budget_overrun"),
    ) | {"purpose": "budget_alert"}
    await w.consume(record(report, partition=0), record(alert, partition=1))
    sent = summary(await w.tick(0, 1))
    assert sorted(sent) == [
        ("budget-overrun:B-1:2026-06:S-1", "sent", None),
        ("report:weekly:2026-W22:S-1", "sent", None),
    ]
    with_csv = [m for m, _ in w.mail.delivered if list(m.iter_attachments())]
    assert len(with_csv) == 1
