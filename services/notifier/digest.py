"""The owners' daily digest: an owner's reminder e-mails folded into one message a day, at a
local time of theirs.

A reminder that the digest applies to is *held*: a digest entry for its owner and day is
recorded in the ledger (once; its key names owner and day) and the reminder waits until the
digest's moment plus ``grace``. When the digest is sent it renders every member still pending
and marks them sent (:meth:`~services.notifier.ledger.Ledger.mark_digested`); a member still
pending after the grace (it joined after the digest went out) is delivered on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as Clocktime

from services.notifier.directory import Contact
from services.notifier.entry import Entry
from services.notifier.errors import PermanentDeliveryError
from services.notifier.ledger import Ledger
from services.notifier.templates import Rendered, Templates
from shared.calendar import at_local, local_date
from shared.events.actions import ActionMessage

DIGEST_PREFIX = "digest:"
DIGEST_TEMPLATE = "owner_digest"
DEFAULT_GRACE = timedelta(minutes=5)


# what is never folded into a digest: a manager's report, a budget overrun (analytics' own)
STANDALONE = frozenset({"report", "budget_alert"})


@dataclass(frozen=True, slots=True)
class Digest:
    """Fold an owner's reminder e-mails into one message a day at ``at`` (their local time).
    Members wait for ``grace`` after the digest's moment: a member still pending then (it
    joined after the digest went out) is delivered on its own."""

    at: Clocktime
    rules: frozenset[str] = frozenset()  # empty: every rule
    grace: timedelta = DEFAULT_GRACE

    def applies(self, entry: Entry) -> bool:
        action = entry.action
        return (
            action.recipient.kind == "staff"
            and action.kind == "email"
            and not action.attachments  # a report with its CSV is a message of its own
            and action.purpose not in STANDALONE
            and not is_digest(entry)
            and (not self.rules or action.rule in self.rules)
        )


def is_digest(entry: Entry) -> bool:
    return entry.key.startswith(DIGEST_PREFIX)


def next_local(now: datetime, tz: str, at: Clocktime) -> datetime:
    """The next moment (after ``now``) when the clocks in ``tz`` show ``at``."""
    today = at_local(local_date(now, tz), at, tz)
    return today if today > now else at_local(local_date(now, tz) + timedelta(days=1), at, tz)


class Digests:
    """Holds reminders for their digest and renders the digest (``digest`` None: off)."""

    def __init__(self, ledger: Ledger, templates: Templates, digest: Digest | None) -> None:
        self._ledger, self._templates, self._digest = ledger, templates, digest

    def wanted(self, entries: list[Entry]) -> set[str]:
        """The digests to read at the start of a tick: those its entries are folded into."""
        return {e.digest_id for e in entries if e.digest_id is not None and e.digest_id != e.key}

    async def hold(
        self, entry: Entry, contact: Contact, known: dict[str, Entry], now: datetime
    ) -> datetime | None:
        """Until when ``entry`` waits for a digest, or None to deliver it now. ``known``: the
        digests read at the start of the tick and those this tick recorded (a digest is
        recorded once per owner and day in a tick, not once per reminder)."""
        if entry.digest_id is not None and entry.key != entry.digest_id:
            digest = known.get(entry.digest_id)
            if digest is not None and digest.state == "pending":  # not out yet: keep waiting
                return now + (self._digest.grace if self._digest else DEFAULT_GRACE)
            return None  # the digest went out without it: deliver it on its own
        if self._digest is None or not self._digest.applies(entry):
            return None
        moment = next_local(now, contact.timezone, self._digest.at)
        day = local_date(moment, contact.timezone).isoformat()
        owner = entry.action.recipient
        digest_id = f"{DIGEST_PREFIX}{owner.id}:{day}"
        if digest_id not in known:
            action = ActionMessage(
                key=digest_id,
                rule="digest",
                subject=f"staff:{owner.id}",
                kind="email",
                recipient=owner,
                template=DIGEST_TEMPLATE,
                locale=contact.locale,
                due_at=moment,
                priority="transactional",
                data={"date": day},
                context={"owner": owner.id},
                created_at=now,
            )
            digest = Entry(
                key=digest_id,
                action=action,
                partition=entry.partition,
                offset=entry.offset,
                next_at=moment,
                created_at=now,
                digest_id=digest_id,
            )
            await self._ledger.record([digest])
            known[digest_id] = digest
        entry.digest_id = digest_id
        return moment + self._digest.grace

    async def render(
        self, entry: Entry, locale: str, contact: Contact | None
    ) -> tuple[Rendered, list[str]]:
        """The digest and the members it folds (a member whose own template fails is left out:
        it is delivered, and fails, on its own)."""
        name = contact.name if contact else None
        items, folded = [], []
        for member in sorted(await self._ledger.members(entry.key), key=lambda e: e.next_at):
            try:
                r = self._templates.render_action(member.action, locale, name)
            except PermanentDeliveryError:
                continue
            items.append({"rule": member.action.rule, "subject": r.subject, "text": r.text})
            folded.append(member.key)
        if not folded:
            raise PermanentDeliveryError("empty_digest", "every member was delivered on its own")
        data = {**entry.action.data, "count": len(items), "items": items}
        extra = {"recipient_name": name}
        return self._templates.render(DIGEST_TEMPLATE, locale, data, extra), folded
