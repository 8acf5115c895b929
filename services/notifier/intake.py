"""The notifier's consuming half: a batch of ``upkeep.actions.v1`` and ``upkeep.events.v1``.

Each new action is recorded in the ledger (a key seen before is ignored: redeliveries and
replays are never delivered twice) and the contact directory is kept from profile events. No
I/O to providers: sending is the :class:`~services.notifier.dispatcher.Dispatcher`'s tick.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from pydantic import ValidationError

from services.notifier.directory import Contact, Directory, contact_from
from services.notifier.entry import Entry
from services.notifier.ledger import Ledger
from services.notifier.outcomes import ACTIONS
from shared.events.actions import ActionMessage
from shared.events.envelope import CanonicalEvent
from shared.kafka.messages import DeadLetter, HandlerResult, Record


class Intake:
    def __init__(
        self,
        ledger: Ledger,
        directory: Directory,
        *,
        actions_topic: str,
        clock: Callable[[], datetime],
    ) -> None:
        self._ledger, self._directory = ledger, directory
        self._actions_topic, self._clock = actions_topic, clock

    async def handle(self, records: Sequence[Record]) -> HandlerResult:
        result, now = HandlerResult(), self._clock()
        entries: list[Entry] = []
        contacts: list[Contact] = []
        for record in records:
            if record.topic == self._actions_topic:
                try:
                    action = ActionMessage.model_validate_json(record.value or b"")
                except ValidationError as exc:
                    result.dead_letters.append(DeadLetter(record, "invalid_action", str(exc)[:500]))
                    continue
                entries.append(
                    Entry(
                        key=action.key,
                        action=action,
                        partition=record.partition,
                        offset=record.offset,
                        next_at=max(action.due_at, now),
                        created_at=now,
                    )
                )
            elif (contact := _contact(record)) is not None:  # profile events; skip the rest
                contacts.append(contact)
        await self._directory.upsert(contacts)
        unique = list({e.key: e for e in entries}.values())
        new = await self._ledger.record(unique)
        result.tick_soon = new > 0 and any(e.next_at <= now for e in unique)
        result.after_commit.append(lambda: ACTIONS.labels("new").inc(new))
        result.after_commit.append(lambda: ACTIONS.labels("repeat").inc(len(entries) - new))
        return result


def _contact(record: Record) -> Contact | None:
    try:
        event = CanonicalEvent.from_json(record.value or b"")
        return contact_from(event, event.payload())
    except (ValidationError, ValueError, KeyError):
        return None  # not ours to judge: rules dead-letters what is wrong on the events topic
