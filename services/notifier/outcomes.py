"""What the dispatcher publishes about an entry — its outcome on ``upkeep.deliveries.v1``, a
dead letter for a failed one — and the notifier's delivery metrics."""

from __future__ import annotations

import uuid
from datetime import datetime

from prometheus_client import Counter, Histogram

from services.notifier.entry import Entry
from shared.events.deliveries import DeliveryMessage, Outcome
from shared.kafka.messages import DeadLetter, Outgoing, StoredRecord
from shared.metrics import preinit

OUTCOMES = Counter(
    "upkeep_notifier_deliveries_total",
    "Delivery outcomes published, by action kind, outcome and reason.",
    ["kind", "outcome", "reason"],
)
ATTEMPTS = Counter(
    "upkeep_notifier_attempts_total",
    "Attempts to hand a message to a provider, by kind and result (ok, transient, permanent).",
    ["kind", "result"],
)
SEND_SECONDS = Histogram(
    "upkeep_notifier_send_seconds",
    "Time to hand one message to its provider.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ACTIONS = Counter(
    "upkeep_notifier_actions_total",
    "Actions consumed, by result (new, repeat: a key already in the ledger).",
    ["result"],
)
KINDS = ("email", "chat", "webhook", "task")
preinit(ATTEMPTS, [(k, r) for k in KINDS for r in ("ok", "transient", "permanent")])
preinit(ACTIONS, [("new",), ("repeat",)])
preinit(OUTCOMES, [(k, o, "") for k in KINDS for o in ("sent", "suppressed", "failed")])


def outcome_message(entry: Entry, outcome: Outcome, now: datetime, topic: str) -> Outgoing:
    """The entry's outcome, keyed by its subject (like its action). Its id is derived from the
    key and the outcome (and a deferral's new time), so a republished outcome is recognisable."""
    action = entry.action
    suffix = f"deferred:{entry.next_at.isoformat()}" if outcome == "deferred" else outcome
    message = DeliveryMessage(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"upkeep:{entry.key}:{suffix}")),
        key=entry.key,
        outcome=outcome,
        reason=entry.reason,
        rule=action.rule,
        subject=action.subject,
        kind=action.kind,
        recipient=action.recipient,
        priority=action.priority,
        template=action.template,
        attempts=entry.attempts,
        due_at=action.due_at,
        at=entry.updated_at or now,
        next_at=entry.next_at if outcome == "deferred" else None,
        data=dict(action.data),
        context=dict(action.context),
        purpose=action.purpose,
        term=action.term,
    )
    return Outgoing(topic, message.model_dump_json().encode(), action.subject.encode())


def dead_letter(entry: Entry, actions_topic: str) -> DeadLetter:
    """A failed entry's action, dead-lettered as the record it was consumed from."""
    record = StoredRecord(
        actions_topic,
        entry.partition,
        entry.offset,
        entry.action.model_dump_json().encode(),
        entry.action.subject.encode(),
    )
    return DeadLetter(record, "delivery_failed", f"{entry.reason}: {entry.detail or ''}"[:500])
