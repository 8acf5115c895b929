"""Calendar logic in a subject's IANA time zone.

* Date-only fields (birthdays, contract end dates) are *local* dates of the subject.
* "At 09:00" means 09:00 on the wall clock where the subject is, in summer and in winter.
  A wall time that does not exist (the hour skipped when clocks go forward) is moved forward by
  the gap (02:30 becomes 03:30); a wall time that happens twice (clocks go back) is the first.
* An anniversary of 29 February falls on 28 February in other years, or on 1 March
  (``Feb29Policy``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from shared.events.fields import zone

Feb29Policy = Literal["feb28", "mar1"]


def local_date(moment: datetime, tz: str) -> date:
    """The date on the wall calendar in ``tz`` at ``moment``."""
    return moment.astimezone(zone(tz)).date()


def at_local(day: date, at: time, tz: str) -> datetime:
    """The UTC moment when the clocks in ``tz`` show ``at`` on ``day`` (see module doc)."""
    # fold=0 resolves both special cases as documented: an ambiguous wall time takes the first
    # offset, and a skipped one is read with the offset before the jump, which lands after it
    return datetime.combine(day, at).replace(tzinfo=zone(tz), fold=0).astimezone(UTC)


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
