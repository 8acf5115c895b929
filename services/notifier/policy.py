"""Whether, and when, an action may be delivered: recipient preferences per category and
channel, unsubscribes and the suppression list, frequency caps, quiet hours.

:func:`decide` is a pure function of what the dispatcher loaded; the stores below keep the
preferences and the suppression list (hard bounces, addresses refused by their server).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

from pydantic import AwareDatetime, BaseModel, Field

from services.notifier.directory import Contact
from services.notifier.entry import Entry
from shared.calendar import at_local, local_date
from shared.events.fields import zone

MARKETING = "marketing"  # the category every non-transactional message belongs to


class Preferences(BaseModel):
    """A recipient's choices. ``categories`` maps "marketing" or a rule name to opted in/out;
    ``channels`` maps a delivery kind (email, chat, webhook) to allowed or not."""

    recipient: str
    categories: dict[str, bool] = Field(default_factory=dict)
    channels: dict[str, bool] = Field(default_factory=dict)
    updated_at: AwareDatetime | None = None


@dataclass(frozen=True, slots=True)
class Send:
    pass


@dataclass(frozen=True, slots=True)
class Suppress:
    reason: str


@dataclass(frozen=True, slots=True)
class Defer:
    until: datetime
    reason: str


Decision = Send | Suppress | Defer


@dataclass(frozen=True, slots=True)
class Rules:
    """The policy settings (from :class:`~services.notifier.settings.NotifierSettings`)."""

    quiet_start: time | None = time(21, 0)
    quiet_end: time | None = time(8, 0)
    quiet_transactional: bool = True
    marketing_cap: int = 3
    marketing_cap_window: timedelta = field(default=timedelta(days=7))


def decide(
    entry: Entry,
    contact: Contact,
    prefs: Preferences | None,
    *,
    suppressed: bool,
    marketing_sent: int,
    now: datetime,
    rules: Rules,
) -> Decision:
    action = entry.action
    if action.kind == "task":
        return Send()  # work for a colleague: no preferences, caps or quiet hours
    if not contact.active:
        return Suppress("inactive_recipient")
    marketing = action.priority == MARKETING
    if prefs is not None and prefs.channels.get(action.kind) is False:
        return Suppress("channel_opt_out")
    if marketing:
        if not contact.marketing_opt_in or (prefs and prefs.categories.get(MARKETING) is False):
            return Suppress("unsubscribed")
        if prefs is not None and prefs.categories.get(action.rule) is False:
            return Suppress("category_opt_out")
    if action.kind == "email" and suppressed:
        return Suppress("suppressed_address")
    if marketing and marketing_sent >= rules.marketing_cap:
        return Suppress("frequency_cap")
    if action.kind in ("email", "chat") and (marketing or rules.quiet_transactional):
        until = quiet_until(now, contact.timezone, rules.quiet_start, rules.quiet_end)
        if until is not None:
            return Defer(until, "quiet_hours")
    return Send()


def quiet_until(now: datetime, tz: str, start: time | None, end: time | None) -> datetime | None:
    """The end of the quiet hours ``now`` falls in, in the recipient's zone; ``None`` outside
    them. A window such as 21:00-08:00 spans midnight."""
    if start is None or end is None or start == end:
        return None
    wall = now.astimezone(zone(tz)).time().replace(tzinfo=None)
    day = local_date(now, tz)
    if start < end:
        quiet, end_day = start <= wall < end, day
    else:
        quiet = wall >= start or wall < end
        end_day = day + timedelta(days=1) if wall >= start else day
    if not quiet:
        return None
    # the end's wall time may happen twice (clocks going back): the first instance after now
    instances = [
        datetime.combine(end_day, end).replace(tzinfo=zone(tz), fold=fold).astimezone(UTC)
        for fold in (0, 1)
    ]
    later = [moment for moment in instances if moment > now]
    return min(later) if later else at_local(end_day + timedelta(days=1), end, tz)
