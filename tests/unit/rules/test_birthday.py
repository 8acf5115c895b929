"""Birthdays and anniversaries with chosen clocks."""

from __future__ import annotations

from datetime import UTC, datetime

from services.rules.builtin.birthday import BirthdayConfig, BirthdaysAndAnniversaries
from services.rules.testing import RuleHarness

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_greeting_at_nine_local_on_the_day_every_year() -> None:
    h = RuleHarness(BirthdaysAndAnniversaries())
    h.send(
        "customer.upserted",
        at=T0,
        customer_id="C-1",
        name="Li",
        timezone="Asia/Shanghai",
        email="li@example.com",
        birthday="1990-03-15",
        locale="zh-CN",
    )
    actions = h.advance(to=datetime(2028, 1, 1, tzinfo=UTC))
    assert [a.key for a in actions] == ["birthday:C-1:2026", "birthday:C-1:2027"]
    assert actions[0].due_at == datetime(2026, 3, 15, 1, tzinfo=UTC)
    assert (actions[0].kind, actions[0].priority, actions[0].locale) == (
        "email",
        "marketing",
        "zh-CN",
    )


def test_29_february_birthdays_follow_the_configured_policy() -> None:
    for policy, expected in (("feb28", "2027-02-28"), ("mar1", "2027-03-01")):
        h = RuleHarness(BirthdaysAndAnniversaries(BirthdayConfig(feb29=policy)))
        h.send(
            "customer.upserted",
            at=datetime(2026, 6, 1, tzinfo=UTC),
            customer_id="C-1",
            name="Leap",
            timezone="UTC",
            email="l@example.com",
            birthday="2000-02-29",
        )
        (action,) = h.advance(to=datetime(2027, 12, 31, tzinfo=UTC))
        assert action.due_at.date().isoformat() == expected


def test_anniversaries_on_configured_years_only() -> None:
    h = RuleHarness(BirthdaysAndAnniversaries(BirthdayConfig(birthdays=False)))
    h.send(
        "customer.upserted",
        at=T0,
        customer_id="C-1",
        name="Old",
        timezone="Europe/Paris",
        email="o@example.com",
        customer_since="2022-07-01",
    )
    actions = h.advance(to=datetime(2033, 1, 1, tzinfo=UTC))
    assert [a.key for a in actions] == [
        "birthday:anniversary:C-1:5y",
        "birthday:anniversary:C-1:10y",
    ]
    assert actions[0].data["years"] == 5


def test_without_email_the_owner_gets_a_task() -> None:
    h = RuleHarness(BirthdaysAndAnniversaries())
    h.send(
        "customer.upserted",
        at=T0,
        customer_id="C-1",
        name="NoMail",
        timezone="UTC",
        birthday="1980-01-20",
        owner_id="S-1",
    )
    (action,) = h.advance(to=datetime(2026, 2, 1, tzinfo=UTC))
    assert (action.kind, action.recipient.kind, action.recipient.id) == ("task", "staff", "S-1")


def test_a_changed_birthday_replaces_the_pending_greeting() -> None:
    h = RuleHarness(BirthdaysAndAnniversaries())
    h.send(
        "customer.upserted",
        at=T0,
        customer_id="C-1",
        name="Li",
        timezone="UTC",
        email="li@example.com",
        birthday="1990-03-15",
        updated_at="2026-01-01T00:00:00Z",
    )
    h.send(
        "customer.upserted",
        at=T0,
        customer_id="C-1",
        name="Li",
        timezone="UTC",
        email="li@example.com",
        birthday="1990-04-20",
        updated_at="2026-01-02T00:00:00Z",
    )
    assert [(t.name, t.due_at.date().isoformat()) for t in h.pending()] == [
        ("birthday:2026", "2026-04-20")
    ]


def test_a_customer_entered_on_their_birthday_is_greeted_late_once() -> None:
    h = RuleHarness(BirthdaysAndAnniversaries())
    # 15 March 2026, 11:30 in Shanghai: the 09:00 greeting was missed by 2.5 hours
    h.send(
        "customer.upserted",
        at=datetime(2026, 3, 15, 3, 30, tzinfo=UTC),
        customer_id="C-1",
        name="Li",
        timezone="Asia/Shanghai",
        email="li@example.com",
        birthday="1990-03-15",
    )
    actions = h.advance(to=datetime(2027, 1, 1, tzinfo=UTC))
    assert [a.key for a in actions] == ["birthday:C-1:2026"]
    assert [t.name for t in h.pending()] == ["birthday:2027"]  # planned once, not again

    h2 = RuleHarness(BirthdaysAndAnniversaries())
    h2.send(  # 23:00 local: missed by 14 hours, beyond the 12-hour catch-up
        "customer.upserted",
        at=datetime(2026, 3, 15, 15, tzinfo=UTC),
        customer_id="C-1",
        name="Li",
        timezone="Asia/Shanghai",
        email="li@example.com",
        birthday="1990-03-15",
    )
    assert [t.name for t in h2.pending()] == ["birthday:2027"]
