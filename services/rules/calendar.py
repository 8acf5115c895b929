"""Calendar logic in a subject's IANA time zone.

* Date-only fields (birthdays, contract end dates) are *local* dates of the subject.
* "At 09:00" means 09:00 on the wall clock where the subject is, in summer and in winter
  (:func:`shared.calendar.at_local`, re-exported here).
* An anniversary of 29 February falls on 28 February in other years, or on 1 March
  (``Feb29Policy``).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Literal

from shared.calendar import at_local, local_date

__all__ = [
    "Feb29Policy",
    "anniversary_in",
    "at_local",
    "days_before",
    "local_date",
    "next_anniversary_moment",
]

Feb29Policy = Literal["feb28", "mar1"]


def anniversary_in(origin: date, year: int, policy: Feb29Policy = "feb28") -> date:
    """The date ``origin`` recurs on in ``year``."""
    try:
        return origin.replace(year=year)
    except ValueError:  # 29 February in a common year
        return date(year, 2, 28) if policy == "feb28" else date(year, 3, 1)


def next_anniversary_moment(
    origin: date, at: time, tz: str, after: datetime, policy: Feb29Policy = "feb28"
) -> tuple[int, datetime]:
    """The first recurrence of ``origin`` at local ``at`` strictly after ``after``, as
    (year, UTC moment). Recurrences start the year after ``origin``."""
    year = max(local_date(after, tz).year - 1, origin.year + 1)
    while True:
        moment = at_local(anniversary_in(origin, year, policy), at, tz)
        if moment > after:
            return year, moment
        year += 1


def days_before(day: date, days: int) -> date:
    return day - timedelta(days=days)
