"""Bucket arithmetic in services/analytics/aggregates.py: where an instant's hour and day start
in the reporting time zone, stored counter names, and totals over rows."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.analytics.aggregates import bucket_id, bucket_start, counter_name, field, totals
from shared.events.fields import zone

HOUR = timedelta(hours=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


@pytest.mark.parametrize(
    ("at", "granularity", "tz", "start"),
    [
        (utc(2026, 11, 2, 10, 45, 12, 500), "hour", "UTC", utc(2026, 11, 2, 10)),
        (utc(2026, 11, 2, 10, 45, 12, 500), "day", "UTC", utc(2026, 11, 2)),
        (utc(2026, 11, 2, 0, 0), "day", "UTC", utc(2026, 11, 2)),  # a start is its own bucket
        (utc(2026, 11, 2, 23, 59, 59, 999_999), "day", "UTC", utc(2026, 11, 2)),
        # 17:30 UTC is 01:30 the next morning in Shanghai (UTC+8): that local day began at
        # 16:00 UTC
        (utc(2026, 11, 2, 17, 30), "day", "Asia/Shanghai", utc(2026, 11, 2, 16)),
        (utc(2026, 11, 2, 17, 30), "hour", "Asia/Shanghai", utc(2026, 11, 2, 17)),
        (utc(2026, 11, 2, 15, 59), "day", "Asia/Shanghai", utc(2026, 11, 1, 16)),
        # a half-hour zone: the local hour starts at half past in UTC
        (utc(2026, 11, 2, 10, 15), "hour", "Asia/Kolkata", utc(2026, 11, 2, 9, 30)),
        (utc(2026, 11, 2, 10, 15), "day", "Asia/Kolkata", utc(2026, 11, 1, 18, 30)),
        # New York on 2026-11-01: 01:30 happens twice, first in EDT (UTC-4), then in EST (UTC-5)
        (utc(2026, 11, 1, 5, 30), "hour", "America/New_York", utc(2026, 11, 1, 5)),
        (utc(2026, 11, 1, 6, 30), "hour", "America/New_York", utc(2026, 11, 1, 6)),
        (utc(2026, 11, 1, 6, 30), "day", "America/New_York", utc(2026, 11, 1, 4)),
        (utc(2026, 11, 2, 4, 30), "day", "America/New_York", utc(2026, 11, 1, 4)),  # 23:30 EST
        (utc(2026, 11, 2, 5, 0), "day", "America/New_York", utc(2026, 11, 2, 5)),
        # Sao Paulo on 2018-11-04: the clocks jumped from 00:00 to 01:00, so that day began at
        # 01:00 local (UTC-2), the instant midnight would have been in UTC-3
        (utc(2018, 11, 4, 12), "day", "America/Sao_Paulo", utc(2018, 11, 4, 3)),
        (utc(2018, 11, 4, 3, 10), "hour", "America/Sao_Paulo", utc(2018, 11, 4, 3)),
    ],
)
def test_bucket_start(at: datetime, granularity: str, tz: str, start: datetime) -> None:
    found = bucket_start(at, granularity, tz)
    assert found == start
    assert found.tzinfo is UTC


def test_the_instant_not_its_written_offset_decides_the_bucket() -> None:
    written_in_shanghai = datetime(2026, 11, 3, 1, 30, tzinfo=timezone(timedelta(hours=8)))
    same_instant = utc(2026, 11, 2, 17, 30)
    for tz in ("UTC", "Asia/Shanghai", "America/New_York"):
        for granularity in ("hour", "day"):
            assert bucket_start(written_in_shanghai, granularity, tz) == bucket_start(
                same_instant, granularity, tz
            )
    assert bucket_start(written_in_shanghai, "day", "UTC") == utc(2026, 11, 2)


def day_starts(first: datetime, tz: str, count: int) -> list[datetime]:
    """``count`` consecutive day starts from ``first``'s day, each found from the last."""
    starts = [bucket_start(first, "day", tz)]
    while len(starts) < count:
        starts.append(bucket_start(starts[-1] + 26 * HOUR, "day", tz))
    return starts


def test_the_day_the_clocks_go_back_in_new_york_lasts_25_hours() -> None:
    starts = day_starts(utc(2026, 10, 31, 12), "America/New_York", 4)
    assert starts == [
        utc(2026, 10, 31, 4),  # 00:00 EDT
        utc(2026, 11, 1, 4),  # 00:00 EDT, the day the clocks go back at 02:00
        utc(2026, 11, 2, 5),  # 00:00 EST
        utc(2026, 11, 3, 5),
    ]
    assert [b - a for a, b in itertools.pairwise(starts)] == [
        24 * HOUR,
        25 * HOUR,
        24 * HOUR,
    ]
    # the 25th hour of 1 November still belongs to 1 November
    assert (
        bucket_start(starts[1] + 24 * HOUR + 59 * timedelta(minutes=1), "day", "America/New_York")
        == starts[1]
    )


def test_the_day_the_clocks_go_forward_in_new_york_lasts_23_hours() -> None:
    starts = day_starts(utc(2026, 3, 7, 12), "America/New_York", 3)
    assert starts == [utc(2026, 3, 7, 5), utc(2026, 3, 8, 5), utc(2026, 3, 9, 4)]


def test_the_hours_of_the_day_the_clocks_go_back_are_25_distinct_buckets() -> None:
    tz = "America/New_York"
    day = bucket_start(utc(2026, 11, 1, 12), "day", tz)
    hours = {bucket_start(day + n * 30 * timedelta(minutes=1), "hour", tz) for n in range(50)}
    assert sorted(hours) == [day + n * HOUR for n in range(25)]


def test_bucket_ids_name_the_granularity_start_and_dimension() -> None:
    start = bucket_start(utc(2026, 11, 2, 17, 30), "day", "Asia/Shanghai")
    assert bucket_id("day", start, "owner", "S-1") == "day|2026-11-02T16:00:00+00:00|owner|S-1"


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("events.customer.upserted", "events~customer~upserted"),
        ("order_value.EUR", "order_value~EUR"),
        ("renewals.due", "renewals~due"),
        ("orders", "orders"),
    ],
)
def test_counter_names_are_stored_without_dots_and_read_back(name: str, stored: str) -> None:
    assert field(name) == stored
    assert counter_name(field(name)) == name


@given(st.text(alphabet=st.characters(exclude_characters="~"), max_size=40))
def test_any_counter_name_without_a_tilde_round_trips(name: str) -> None:
    stored = field(name)
    assert "." not in stored
    assert counter_name(stored) == name


def row(**counters: int) -> dict[str, Any]:
    return {"start": utc(2026, 11, 2), "dim": "all", "value": "*", "counters": counters}


def test_totals_add_every_counter_over_the_rows() -> None:
    rows = [row(orders=2, **{"order_value.EUR": 2500}), row(orders=1, **{"renewals.due": 3})]
    assert totals(rows) == {"orders": 3, "order_value.EUR": 2500, "renewals.due": 3}


def test_totals_of_nothing_are_empty() -> None:
    assert totals([]) == {}
    assert totals([row()]) == {}


ZONES = st.sampled_from(
    [
        "UTC",
        "Asia/Shanghai",
        "America/New_York",
        "Europe/London",
        "Asia/Kolkata",
        "Australia/Sydney",
        "America/Sao_Paulo",
    ]
)
# realistic instants, written in any of a few offsets (the instant is what counts)
INSTANTS = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, zone("Asia/Shanghai"), zone("America/Los_Angeles")]),
)


@settings(max_examples=500, deadline=None)
@given(INSTANTS, ZONES)
def test_an_instant_lies_in_its_hour_which_lies_in_its_day(at: datetime, tz: str) -> None:
    hour = bucket_start(at, "hour", tz)
    day = bucket_start(at, "day", tz)
    assert hour <= at < hour + HOUR
    assert day <= hour
    assert bucket_start(hour, "day", tz) == day  # the hour's own day is the instant's day
    assert bucket_start(hour, "hour", tz) == hour  # a start is in its own bucket
    assert bucket_start(day, "day", tz) == day
    assert at - day < 25 * HOUR  # no local day is longer
    local = hour.astimezone(zone(tz))
    assert (local.minute, local.second, local.microsecond) == (0, 0, 0)
