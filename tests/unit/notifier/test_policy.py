"""services/notifier/policy.py: who may be sent what, and when quiet hours end (in the
recipient's zone, across DST changes)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.notifier.directory import Contact
from services.notifier.entry import Entry
from services.notifier.policy import (
    Decision,
    Defer,
    Preferences,
    Rules,
    Send,
    Suppress,
    decide,
    quiet_until,
)
from shared.events.actions import ActionMessage
from shared.events.fields import zone

NOON = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # outside 21:00-08:00 in UTC
NIGHT = datetime(2026, 6, 1, 23, 0, tzinfo=UTC)  # inside it
NIGHT_ENDS = datetime(2026, 6, 2, 8, 0, tzinfo=UTC)
RULES = Rules()  # 21:00-08:00, transactional too, 3 marketing messages a week
NY = "America/New_York"


def entry(*, kind: str = "email", priority: str = "transactional", rule: str = "birthday") -> Entry:
    action = ActionMessage.model_validate(
        {
            "key": f"{rule}:C-1:2026",
            "rule": rule,
            "subject": "customer:C-1",
            "kind": kind,
            "recipient": {"kind": "customer", "id": "C-1"},
            "template": "birthday_greeting",
            "locale": "en",
            "due_at": NOON,
            "priority": priority,
            "data": {},
            "created_at": NOON,
        }
    )
    return Entry(
        key=action.key, action=action, partition=0, offset=0, next_at=NOON, created_at=NOON
    )


def contact(**fields: Any) -> Contact:
    return Contact(id="customer:C-1", email="li.lei@example.com", updated_at=NOON, **fields)


def prefs(
    categories: dict[str, bool] | None = None, channels: dict[str, bool] | None = None
) -> Preferences:
    return Preferences(
        recipient="customer:C-1", categories=categories or {}, channels=channels or {}
    )


def decision(
    the_entry: Entry,
    the_contact: Contact | None = None,
    the_prefs: Preferences | None = None,
    *,
    suppressed: bool = False,
    marketing_sent: int = 0,
    now: datetime = NOON,
    rules: Rules = RULES,
) -> Decision:
    return decide(
        the_entry,
        the_contact or contact(),
        the_prefs,
        suppressed=suppressed,
        marketing_sent=marketing_sent,
        now=now,
        rules=rules,
    )


# decide ----------------------------------------------------------------------------------------


def test_an_ordinary_message_is_sent() -> None:
    assert decision(entry()) == Send()
    assert decision(entry(priority="marketing")) == Send()


@pytest.mark.parametrize("priority", ["transactional", "marketing"])
def test_a_task_is_always_sent_whatever_would_hold_back_a_message(priority: str) -> None:
    everything_against = decide(
        entry(kind="task", priority=priority),
        contact(active=False, marketing_opt_in=False, timezone="UTC"),
        prefs({"marketing": False, "birthday": False}, {"task": False, "email": False}),
        suppressed=True,
        marketing_sent=99,
        now=NIGHT,
        rules=RULES,
    )
    assert everything_against == Send()


@pytest.mark.parametrize("kind", ["email", "chat", "webhook"])
def test_an_inactive_recipient_is_suppressed(kind: str) -> None:
    assert decision(entry(kind=kind), contact(active=False)) == Suppress("inactive_recipient")


def test_a_channel_opt_out_suppresses_that_channel_only() -> None:
    no_email = prefs(channels={"email": False, "chat": True})
    assert decision(entry(kind="email"), the_prefs=no_email) == Suppress("channel_opt_out")
    assert decision(entry(kind="chat"), the_prefs=no_email) == Send()
    assert decision(entry(kind="webhook"), the_prefs=no_email) == Send()


def test_unsubscribed_from_marketing_in_the_preferences() -> None:
    unsubscribed = prefs({"marketing": False})
    assert decision(entry(priority="marketing"), the_prefs=unsubscribed) == Suppress("unsubscribed")
    assert decision(entry(priority="transactional"), the_prefs=unsubscribed) == Send()
    opted_in = prefs({"marketing": True})
    assert decision(entry(priority="marketing"), the_prefs=opted_in) == Send()


def test_unsubscribed_from_marketing_in_the_crm_profile() -> None:
    no_marketing = contact(marketing_opt_in=False)
    assert decision(entry(priority="marketing"), no_marketing) == Suppress("unsubscribed")
    assert decision(entry(priority="transactional"), no_marketing) == Send()


def test_a_category_opt_out_holds_back_marketing_of_that_rule_only() -> None:
    no_birthdays = prefs({"birthday": False})
    assert decision(entry(priority="marketing"), the_prefs=no_birthdays) == Suppress(
        "category_opt_out"
    )
    assert decision(entry(priority="transactional"), the_prefs=no_birthdays) == Send()
    other_rule = entry(priority="marketing", rule="anniversary")
    assert decision(other_rule, the_prefs=no_birthdays) == Send()


def test_a_suppressed_address_holds_back_email_only() -> None:
    assert decision(entry(kind="email"), suppressed=True) == Suppress("suppressed_address")
    assert decision(entry(kind="email", priority="marketing"), suppressed=True) == Suppress(
        "suppressed_address"
    )
    assert decision(entry(kind="chat"), suppressed=True) == Send()
    assert decision(entry(kind="webhook"), suppressed=True) == Send()


def test_the_frequency_cap_applies_at_exactly_the_cap_and_to_marketing_only() -> None:
    marketing = entry(priority="marketing")
    assert decision(marketing, marketing_sent=2) == Send()
    assert decision(marketing, marketing_sent=3) == Suppress("frequency_cap")
    assert decision(marketing, marketing_sent=4) == Suppress("frequency_cap")
    assert decision(entry(priority="transactional"), marketing_sent=50) == Send()
    no_marketing_at_all = Rules(marketing_cap=0)
    assert decision(marketing, marketing_sent=0, rules=no_marketing_at_all) == Suppress(
        "frequency_cap"
    )


@pytest.mark.parametrize("kind", ["email", "chat"])
@pytest.mark.parametrize("priority", ["transactional", "marketing"])
def test_quiet_hours_defer_email_and_chat_to_the_end_of_the_night(kind: str, priority: str) -> None:
    assert decision(entry(kind=kind, priority=priority), now=NIGHT) == Defer(
        NIGHT_ENDS, "quiet_hours"
    )
    assert decision(entry(kind=kind, priority=priority), now=NOON) == Send()


def test_quiet_hours_hold_back_transactional_messages_only_when_configured() -> None:
    daytime_only = Rules(quiet_transactional=False)
    assert decision(entry(priority="transactional"), now=NIGHT, rules=daytime_only) == Send()
    assert decision(entry(priority="marketing"), now=NIGHT, rules=daytime_only) == Defer(
        NIGHT_ENDS, "quiet_hours"
    )


@pytest.mark.parametrize("priority", ["transactional", "marketing"])
def test_webhooks_are_never_deferred(priority: str) -> None:
    assert decision(entry(kind="webhook", priority=priority), now=NIGHT) == Send()


def test_quiet_hours_are_the_recipients_own() -> None:
    # 14:30 UTC is 22:30 in Shanghai: quiet until 08:00 there, which is midnight UTC
    in_shanghai = contact(timezone="Asia/Shanghai")
    evening = datetime(2026, 6, 1, 14, 30, tzinfo=UTC)
    assert decision(entry(), in_shanghai, now=evening) == Defer(
        datetime(2026, 6, 2, 0, 0, tzinfo=UTC), "quiet_hours"
    )
    # 23:00 UTC is 07:00 the next morning in Shanghai: one hour of quiet left
    assert decision(entry(), in_shanghai, now=NIGHT) == Defer(
        datetime(2026, 6, 2, 0, 0, tzinfo=UTC), "quiet_hours"
    )
    # noon UTC is 20:00 in Shanghai (not quiet yet) but 08:00 in New York (just over)
    assert decision(entry(), in_shanghai, now=NOON) == Send()
    assert decision(entry(), contact(timezone=NY), now=NOON) == Send()
    # 23:00 UTC is 19:00 in New York
    assert decision(entry(), contact(timezone=NY), now=NIGHT) == Send()


def test_a_policy_without_quiet_hours_never_defers() -> None:
    for start, end in [(None, time(8)), (time(21), None), (None, None), (time(8), time(8))]:
        rules = Rules(quiet_start=start, quiet_end=end)
        assert decision(entry(), now=NIGHT, rules=rules) == Send()
        assert quiet_until(NIGHT, "UTC", start, end) is None


# quiet_until -----------------------------------------------------------------------------------


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(2026, 6, 1, 20, 59, 59), None),
        (utc(2026, 6, 1, 21, 0), utc(2026, 6, 2, 8, 0)),
        (utc(2026, 6, 1, 23, 30), utc(2026, 6, 2, 8, 0)),
        (utc(2026, 6, 2, 0, 0), utc(2026, 6, 2, 8, 0)),
        (utc(2026, 6, 2, 7, 59, 59), utc(2026, 6, 2, 8, 0)),
        (utc(2026, 6, 2, 8, 0), None),
        (utc(2026, 6, 2, 12, 0), None),
        (utc(2026, 12, 31, 22, 0), utc(2027, 1, 1, 8, 0)),  # over a year's end
    ],
)
def test_a_window_that_spans_midnight(now: datetime, expected: datetime | None) -> None:
    assert quiet_until(now, "UTC", time(21, 0), time(8, 0)) == expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(2026, 6, 1, 12, 59, 59), None),
        (utc(2026, 6, 1, 13, 0), utc(2026, 6, 1, 14, 0)),
        (utc(2026, 6, 1, 13, 59), utc(2026, 6, 1, 14, 0)),
        (utc(2026, 6, 1, 14, 0), None),
        (utc(2026, 6, 1, 23, 0), None),
        (utc(2026, 6, 1, 1, 0), None),
    ],
)
def test_a_window_within_one_day(now: datetime, expected: datetime | None) -> None:
    assert quiet_until(now, "UTC", time(13, 0), time(14, 0)) == expected


def test_a_window_within_one_day_in_the_recipients_zone() -> None:
    # 13:30 in New York (EDT, UTC-4) is 17:30 UTC; the lunch break ends at 18:00 UTC
    assert quiet_until(utc(2026, 6, 1, 17, 30), NY, time(13), time(14)) == utc(2026, 6, 1, 18)
    assert quiet_until(utc(2026, 6, 1, 13, 30), NY, time(13), time(14)) is None  # 09:30 there
    # and in Shanghai (UTC+8) 13:30 is 05:30 UTC
    assert quiet_until(utc(2026, 6, 1, 5, 30), "Asia/Shanghai", time(13), time(14)) == utc(
        2026, 6, 1, 6
    )


def test_the_night_in_shanghai_and_new_york() -> None:
    night = (time(21), time(8))
    # 22:30 in Shanghai on 1 June ends at 08:00 on 2 June there: 00:00 UTC
    assert quiet_until(utc(2026, 6, 1, 14, 30), "Asia/Shanghai", *night) == utc(2026, 6, 2)
    # 21:30 on 31 May in New York (EDT) is 01:30 UTC on 1 June; the night ends 12:00 UTC
    assert quiet_until(utc(2026, 6, 1, 1, 30), NY, *night) == utc(2026, 6, 1, 12)
    # in winter (EST, UTC-5) the same local night ends an hour later in UTC
    assert quiet_until(utc(2026, 1, 15, 2, 30), NY, *night) == utc(2026, 1, 15, 13)
    # 20:00 in New York (midnight UTC in summer) is not quiet yet
    assert quiet_until(utc(2026, 6, 2, 0, 0), NY, *night) is None


@pytest.mark.parametrize(
    ("local_now", "fold", "expected"),
    [
        # clocks go forward on 8 March 2026 at 02:00 EST -> 03:00 EDT: the night is an hour
        # shorter and ends at 08:00 EDT = 12:00 UTC (not 13:00, which 08:00 EST would be)
        (datetime(2026, 3, 7, 23, 0), 0, utc(2026, 3, 8, 12)),
        (datetime(2026, 3, 8, 1, 30), 0, utc(2026, 3, 8, 12)),
        (datetime(2026, 3, 8, 3, 30), 0, utc(2026, 3, 8, 12)),
        # clocks go back on 1 November 2026 at 02:00 EDT -> 01:00 EST: the night is an hour
        # longer and ends at 08:00 EST = 13:00 UTC (not 12:00, which 08:00 EDT would be)
        (datetime(2026, 10, 31, 22, 0), 0, utc(2026, 11, 1, 13)),
        (datetime(2026, 11, 1, 1, 30), 0, utc(2026, 11, 1, 13)),
        (datetime(2026, 11, 1, 1, 30), 1, utc(2026, 11, 1, 13)),
        (datetime(2026, 11, 1, 7, 59), 0, utc(2026, 11, 1, 13)),
    ],
)
def test_the_night_ends_at_local_eight_across_a_dst_change(
    local_now: datetime, fold: int, expected: datetime
) -> None:
    now = local_now.replace(tzinfo=zone(NY), fold=fold).astimezone(UTC)
    until = quiet_until(now, NY, time(21), time(8))
    assert until == expected
    assert until.astimezone(zone(NY)).time() == time(8)


def test_the_night_of_a_dst_change_is_shorter_or_longer_by_the_hour() -> None:
    spring_evening = datetime(2026, 3, 7, 21, 0, tzinfo=zone(NY)).astimezone(UTC)
    autumn_evening = datetime(2026, 10, 31, 21, 0, tzinfo=zone(NY)).astimezone(UTC)
    spring = quiet_until(spring_evening, NY, time(21), time(8))
    autumn = quiet_until(autumn_evening, NY, time(21), time(8))
    assert spring is not None
    assert autumn is not None
    assert spring - spring_evening == timedelta(hours=10)
    assert autumn - autumn_evening == timedelta(hours=12)


def test_quiet_hours_that_end_in_the_repeated_hour_end_after_now() -> None:
    # 1 November 2026 in New York: 01:00-02:00 happens twice. At 01:30 EST (the second time,
    # 06:30 UTC) a night of 22:00-01:45 still has 15 minutes to go, until 01:45 EST (06:45 UTC);
    # quiet_until answers 01:45 EDT (05:45 UTC), 45 minutes ago, so the dispatcher defers the
    # entry into the past and defers it again on every tick until the hour is over.
    now = datetime(2026, 11, 1, 1, 30, tzinfo=zone(NY), fold=1).astimezone(UTC)
    assert now == utc(2026, 11, 1, 6, 30)
    until = quiet_until(now, NY, time(22), time(1, 45))
    assert until is not None
    assert until > now
    assert until == utc(2026, 11, 1, 6, 45)


# quiet_until, as a property -------------------------------------------------------------------

ZONES = ["UTC", "Asia/Shanghai", NY, "Europe/London", "Australia/Sydney", "Asia/Kolkata"]
# the nights the clocks change in the zones above, where quiet hours are most easily got wrong
DST_DAYS = [
    date(2026, 3, 8),
    date(2026, 11, 1),  # New York
    date(2026, 3, 29),
    date(2026, 10, 25),  # London
    date(2026, 4, 5),
    date(2026, 10, 4),  # Sydney
]
MINUTES = st.integers(0, 24 * 60 - 1).map(lambda m: time(m // 60, m % 60))
# Window ends avoid 01:00-03:00 local: in these zones that is where a wall time is skipped
# (02:00-03:00, where the end would be shifted by the gap) or repeated (01:00-02:00 in New York
# and London, 02:00-03:00 in Sydney; the test above covers the repeated hour).
ENDS = MINUTES.filter(lambda t: not time(1) <= t < time(3))
INSTANTS = st.one_of(
    st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
    ),
    st.builds(
        lambda day, seconds: datetime.combine(day, time(), tzinfo=UTC) + timedelta(seconds=seconds),
        st.sampled_from(DST_DAYS),
        st.integers(-36 * 3600, 36 * 3600),
    ),
)


def in_window(wall: time, start: time, end: time) -> bool:
    return start <= wall < end if start < end else wall >= start or wall < end


@settings(max_examples=1000, deadline=None)
@given(INSTANTS, st.sampled_from(ZONES), MINUTES, ENDS)
def test_quiet_hours_end_after_now_at_the_local_end_time(
    now: datetime, tz: str, start: time, end: time
) -> None:
    until = quiet_until(now, tz, start, end)
    wall = now.astimezone(zone(tz)).time().replace(tzinfo=None)
    if start == end:
        assert until is None
        return
    if until is None:
        assert not in_window(wall, start, end)
        return
    assert in_window(wall, start, end)
    assert now < until <= now + timedelta(hours=25)
    assert until.astimezone(zone(tz)).time().replace(tzinfo=None) == end
    # and the wall clock does not leave the window before ``until`` (it ends there)
    assert in_window((until - timedelta(seconds=1)).astimezone(zone(tz)).time(), start, end)
