"""Wall-clock time in an IANA time zone, shared by rules (reminders at 09:00 local) and the
notifier (quiet hours).

"At 09:00" means 09:00 on the wall clock where the person is, in summer and in winter. A wall
time that does not exist (the hour skipped when clocks go forward) is moved forward by the gap
(02:30 becomes 03:30); a wall time that happens twice (clocks go back) is the first.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from shared.events.fields import zone


def local_date(moment: datetime, tz: str) -> date:
    """The date on the wall calendar in ``tz`` at ``moment``."""
    return moment.astimezone(zone(tz)).date()


def at_local(day: date, at: time, tz: str) -> datetime:
    """The UTC moment when the clocks in ``tz`` show ``at`` on ``day`` (see module doc)."""
    # fold=0 resolves both special cases as documented: an ambiguous wall time takes the first
    # offset, and a skipped one is read with the offset before the jump, which lands after it
    return datetime.combine(day, at).replace(tzinfo=zone(tz), fold=0).astimezone(UTC)
