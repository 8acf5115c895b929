"""Calendar logic: local wall-clock times across DST, 29 February, month ends."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.rules.calendar import anniversary_in, at_local, local_date, next_anniversary_moment
from shared.events.fields import zone

ZONES = st.sampled_from(
    [
        "Europe/London",
        "America/New_York",
        "Asia/Shanghai",
        "Australia/Lord_Howe",
        "America/Santiago",
        "Pacific/Chatham",
        "Asia/Kolkata",
        "UTC",
        "Europe/Berlin",
    ]
)
DAYS = st.dates(min_value=date(1990, 1, 1), max_value=date(2060, 12, 31))
TIMES = st.times().map(lambda t: t.replace(microsecond=0))


@settings(max_examples=400, deadline=None)
@given(DAYS, TIMES, ZONES)
def test_at_local_shows_the_wall_time_or_just_after_a_skipped_one(
    day: date, at: time, tz: str
) -> None:
    moment = at_local(day, at, tz)
    wall = moment.astimezone(zone(tz)).replace(tzinfo=None)
    wanted = datetime.combine(day, at)
    assert moment.tzinfo is UTC
    assert wanted <= wall < wanted + timedelta(hours=2)
    if wall != wanted:  # only when the wall time does not exist that day
        assert (
            datetime.combine(day, at)
            .replace(tzinfo=zone(tz))
            .astimezone(UTC)
            .astimezone(zone(tz))
            .replace(tzinfo=None)
            != wanted
        )


def test_nine_in_the_morning_follows_the_clock_change() -> None:
    winter = at_local(date(2026, 1, 15), time(9), "Europe/London")
    summer = at_local(date(2026, 7, 15), time(9), "Europe/London")
    assert (winter.hour, summer.hour) == (9, 8)


def test_a_skipped_hour_moves_forward_and_a_repeated_hour_takes_the_first() -> None:
    skipped = at_local(date(2026, 3, 8), time(2, 30), "America/New_York")  # clocks 2:00 -> 3:00
    assert skipped.astimezone(zone("America/New_York")).time() == time(3, 30)
    repeated = at_local(date(2026, 11, 1), time(1, 30), "America/New_York")  # 1:00-2:00 twice
    assert repeated == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # the first, still on EDT


@given(st.integers(min_value=1901, max_value=2099))
def test_29_february_falls_on_28_february_or_1_march_in_common_years(year: int) -> None:
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    born = date(2000, 2, 29)
    assert anniversary_in(born, year, "feb28") == date(year, 2, 29 if leap else 28)
    assert anniversary_in(born, year, "mar1") == (date(year, 2, 29) if leap else date(year, 3, 1))


@settings(max_examples=300, deadline=None)
@given(DAYS, ZONES, st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2050, 1, 1)))
def test_the_next_anniversary_is_after_now_and_within_a_year(
    origin: date, tz: str, now_naive: datetime
) -> None:
    now = now_naive.replace(tzinfo=UTC)
    year, moment = next_anniversary_moment(origin, time(9), tz, now)
    assert moment > now
    assert year > origin.year
    assert moment - now <= timedelta(days=367) or year == origin.year + 1
    local = local_date(moment, tz)
    assert (local.month, local.day) == (origin.month, origin.day) or (
        (origin.month, origin.day) == (2, 29) and (local.month, local.day) == (2, 28)
    )


def test_month_end_contract_offsets_stay_on_real_dates() -> None:
    end = date(2027, 3, 31)
    assert end - timedelta(days=30) == date(2027, 3, 1)
    assert local_date(at_local(end, time(23, 30), "Asia/Shanghai"), "Asia/Shanghai") == end
