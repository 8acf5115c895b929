"""Delivery: actions into the ledger, due ledger entries out to their channels.

Two halves, both driven by the shared consumer loop:

* :meth:`Dispatcher.handle` (a batch of ``upkeep.actions.v1`` and ``upkeep.events.v1``): records
  each new action in the ledger (a key seen before is ignored: redeliveries and replays are never
  delivered twice) and keeps the contact directory from profile events. No I/O to providers.
* :meth:`Dispatcher.tick` (every ``dispatch_interval_s``, for the actions partitions this replica
  owns): takes the due ledger entries, applies the policy, sends, writes each entry's new state
  right after its attempt, and returns the outcomes (and dead letters) to publish in the tick's
  transaction. Entries with a final state are flagged ``unpublished`` until that commits.

Retries never sleep: a transient failure moves the entry's ``next_at`` (exponential backoff with
jitter, or the provider's ``Retry-After``) and the tick goes on with the other entries.

**The window in which a crash can still duplicate a message** is between the provider accepting
it (SMTP ``250`` after DATA, HTTP ``2xx``) and the ledger write that follows it immediately —
one MongoDB round trip. An entry caught in it is still ``pending`` and is sent again; the copy
carries the same ``Message-ID`` / ``webhook-id`` (derived from the key), so receivers can tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as Clocktime
from email.errors import MessageError
from typing import TypeVar
from urllib.parse import urlencode, urlsplit

from aiokafka import TopicPartition
from prometheus_client import Counter, Histogram
from pydantic import ValidationError
from tenacity import RetryCallState, wait_random_exponential

from services.notifier.breaker import Breakers
from services.notifier.channels.chat import ChatSender
from services.notifier.channels.email import RecipientRefused, SmtpPool, build_message
from services.notifier.channels.webhook import WebhookSender
from services.notifier.directory import Contact, Directory, contact_from
from services.notifier.errors import (
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from services.notifier.ledger import Entry, Ledger
from services.notifier.policy import MARKETING, Defer, PolicyStore, Rules, Send, Suppress, decide
from services.notifier.tasks import Task, TaskStore
from services.notifier.templates import Rendered, Templates
from shared.calendar import at_local, local_date
from shared.errors import is_transient
from shared.events.actions import ActionMessage
from shared.events.deliveries import DeliveryMessage, Outcome
from shared.events.envelope import CanonicalEvent
from shared.kafka.messages import DeadLetter, FakeRecord, HandlerResult, Outgoing, Record
from shared.metrics import preinit

log = logging.getLogger(__name__)
T = TypeVar("T")
Clock = Callable[[], datetime]

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
RETRY_AFTER_CAP_S = 24 * 3600.0
preinit(ATTEMPTS, [(k, r) for k in KINDS for r in ("ok", "transient", "permanent")])
preinit(ACTIONS, [("new",), ("repeat",)])
preinit(OUTCOMES, [(k, o, "") for k in KINDS for o in ("sent", "suppressed", "failed")])


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Channels:
    """Where each kind of action goes."""

    email: SmtpPool
    webhook: WebhookSender | None  # None without UPKEEP_NOTIFIER_WEBHOOK_URL
    chat: ChatSender
    tasks: TaskStore
    mail_from: str
    message_id_domain: str
    webhook_url: str | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    max_attempts: int = 8
    retry_base_s: float = 30.0
    retry_max_s: float = 3600.0
    unknown_recipient_wait: timedelta = timedelta(hours=1)
    unknown_recipient_retry: timedelta = timedelta(seconds=2)
    tick_budget_s: float = 30.0  # no new send starts after this long in one tick
    per_partition: int = 200


DIGEST_PREFIX = "digest:"
DIGEST_TEMPLATE = "owner_digest"


@dataclass(frozen=True, slots=True)
class Digest:
    """Fold an owner's reminder e-mails into one message a day at ``at`` (their local time).
    Members wait for ``grace`` after the digest's moment: a member still pending then (it
    joined after the digest went out) is delivered on its own."""

    at: Clocktime
    rules: frozenset[str] = frozenset()  # empty: every rule
    grace: timedelta = timedelta(minutes=5)

    def applies(self, entry: Entry) -> bool:
        action = entry.action
        return (
            action.recipient.kind == "staff"
            and action.kind == "email"
            and not entry.key.startswith(DIGEST_PREFIX)
            and (not self.rules or action.rule in self.rules)
        )


def next_local(now: datetime, tz: str, at: Clocktime) -> datetime:
    """The next moment (after ``now``) when the clocks in ``tz`` show ``at``."""
    today = at_local(local_date(now, tz), at, tz)
    return today if today > now else at_local(local_date(now, tz) + timedelta(days=1), at, tz)


class Unsubscribes:
    """Signed one-click unsubscribe links (RFC 8058) and their verification."""

    def __init__(self, base_url: str, secret: bytes) -> None:
        self._base, self._secret = base_url.rstrip("/"), secret

    def token(self, recipient: str, category: str) -> str:
        mac = hmac.new(self._secret, f"{recipient}|{category}".encode(), hashlib.sha256)
        return mac.hexdigest()[:32]

    def url(self, recipient: str, category: str = MARKETING) -> str:
        query = urlencode({"r": recipient, "c": category, "t": self.token(recipient, category)})
        return f"{self._base}/v1/unsubscribe?{query}"

    def valid(self, recipient: str, category: str, token: str) -> bool:
        return hmac.compare_digest(self.token(recipient, category).encode(), token.encode())


class Dispatcher:
    def __init__(
        self,
        ledger: Ledger,
        directory: Directory,
        policy: PolicyStore,
        templates: Templates,
        channels: Channels,
        unsubscribes: Unsubscribes,
        *,
        actions_topic: str,
        deliveries_topic: str,
        rules: Rules | None = None,
        limits: Limits | None = None,
        breakers: Breakers | None = None,
        digest: Digest | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._ledger, self._directory, self._policy = ledger, directory, policy
        self._templates, self._channels, self._unsubscribes = templates, channels, unsubscribes
        self._actions_topic, self._deliveries_topic = actions_topic, deliveries_topic
        self._rules = rules or Rules()
        self._limits = limits or Limits()
        self._breakers = breakers or Breakers()
        self._digest = digest
        self._clock = clock
        self._gates: dict[str, asyncio.Semaphore] = {}
        self._backoff = wait_random_exponential(
            multiplier=self._limits.retry_base_s, max=self._limits.retry_max_s
        )

    # -- consuming ---------------------------------------------------------------------------

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
            else:  # a canonical event: keep the contacts of profile events, skip the rest
                contact = _contact(record)
                if contact is not None:
                    contacts.append(contact)
        await self._directory.upsert(contacts)
        unique = list({e.key: e for e in entries}.values())
        new = await self._ledger.record(unique)
        result.tick_soon = new > 0 and any(e.next_at <= now for e in unique)
        result.after_commit.append(lambda: ACTIONS.labels("new").inc(new))
        result.after_commit.append(lambda: ACTIONS.labels("repeat").inc(len(entries) - new))
        return result

    # -- dispatching -------------------------------------------------------------------------

    def revoked(self, partitions: set[TopicPartition]) -> None:
        """Nothing to forget: the ledger in MongoDB is the only state."""

    async def tick(self, partitions: set[TopicPartition]) -> HandlerResult:
        owned = sorted(tp.partition for tp in partitions if tp.topic == self._actions_topic)
        result, now = HandlerResult(), self._clock()
        finished: dict[str, Entry] = {}
        limit = self._limits.per_partition * len(owned)
        # one query each for all the partitions owned, both at once (the driver pools
        # connections); due entries earliest first across the partitions
        unpublished, due = await asyncio.gather(
            self._ledger.unpublished(owned, limit), self._ledger.due(owned, now, limit)
        )
        for entry in unpublished:
            finished[entry.key] = entry
        result.tick_soon = len(due) >= limit > 0  # more are due
        if due:
            for entry in await self._dispatch(due, now, result):
                finished[entry.key] = entry
        await self._ledger.flush()  # the previous tick's published flags, if no save took them
        for entry in finished.values():
            result.messages.append(self._outcome(entry, entry.state, now))  # type: ignore[arg-type]
            if entry.state == "failed":
                result.dead_letters.append(self._dead_letter(entry))
        if finished:
            keys = list(finished)

            async def published() -> None:
                await self._ledger.mark_published(keys)
                for e in finished.values():
                    OUTCOMES.labels(e.action.kind, e.state, e.reason or "").inc()

            result.after_commit.append(published)
        return result

    async def _dispatch(
        self, due: list[Entry], now: datetime, result: HandlerResult
    ) -> list[Entry]:
        """Decide for every due entry (in order, so caps see earlier decisions), then attempt
        the sends concurrently (each pool bounds its own provider). Returns the entries that
        reached a final state."""
        # what the decisions need, one query each for the whole tick and all at once (the
        # driver pools connections); only the suppressions wait for the contacts' addresses
        recipients = {e.recipient for e in due}
        contacts, prefs, sent_counts, digests = await asyncio.gather(
            self._directory.get(recipients),
            self._policy.preferences(recipients),
            self._ledger.sent_counts(
                {e.recipient for e in due if e.action.priority == MARKETING},
                now - self._rules.marketing_cap_window,
            ),
            self._ledger.get_many(
                {e.digest_id for e in due if e.digest_id is not None and e.digest_id != e.key}
            ),
        )
        addresses = {c.email.lower() for c in contacts.values() if c.email}
        suppressed = await self._policy.suppressed(addresses)
        sends: list[tuple[Entry, Contact | None]] = []
        deferred: list[Entry] = []  # saved with the decided ones, in one group commit
        for entry in due:
            contact = contacts.get(entry.recipient)
            if contact is None and entry.action.kind in ("email", "chat"):
                if self._unknown(entry, now, result):
                    deferred.append(entry)
                continue
            if contact is None:  # tasks and webhooks need no contact
                sends.append((entry, None))
                continue
            if entry.action.kind == "email" and await self._fold(
                entry, contact, digests, now, result
            ):
                deferred.append(entry)
                continue
            marketing = entry.action.priority == MARKETING
            try:
                decision: Send | Suppress | Defer = decide(
                    entry,
                    contact,
                    prefs.get(entry.recipient),
                    suppressed=bool(contact.email and contact.email.lower() in suppressed),
                    marketing_sent=sent_counts.get(entry.recipient, 0),
                    now=now,
                    rules=self._rules,
                )
            except Exception:  # e.g. a contact's zone that no longer exists: this entry only
                log.exception("policy failed for one entry", extra={"key": entry.key})
                entry.state, entry.reason, entry.unpublished = "failed", "internal_error", True
                entry.updated_at = now
                continue
            if isinstance(decision, Suppress):
                entry.state, entry.reason, entry.unpublished = "suppressed", decision.reason, True
                entry.updated_at = now
            elif isinstance(decision, Defer):
                self._defer(entry, decision.until, decision.reason, now, result)
                deferred.append(entry)
            elif isinstance(decision, Send):
                if marketing:
                    sent_counts[entry.recipient] = sent_counts.get(entry.recipient, 0) + 1
                sends.append((entry, contact))
        decided = [e for e in due if e.state != "pending"]
        await _all(self._ledger.save(e) for e in decided + deferred)
        deadline = time.monotonic() + self._limits.tick_budget_s
        halted = asyncio.Event()  # a ledger write failed: start no more sends in this tick
        attempted = await _all(self._attempt(e, c, result, deadline, halted) for e, c in sends)
        return decided + [e for e in attempted if e.state != "pending"]

    async def _fold(
        self,
        entry: Entry,
        contact: Contact,
        digests: dict[str, Entry],
        now: datetime,
        result: HandlerResult,
    ) -> bool:
        """Hold an owner's reminder for their daily digest; True if it is held (the caller
        saves it). ``digests``: the digests the tick's entries were folded into, read at the
        start of the tick, and those this tick has recorded."""
        if entry.digest_id is not None and entry.key != entry.digest_id:
            digest = digests.get(entry.digest_id)
            if digest is not None and digest.state == "pending":  # not out yet: keep waiting
                grace = self._digest.grace if self._digest else timedelta(minutes=5)
                self._defer(entry, now + grace, "digest", now, result)
                return True
            return False  # the digest went out without it: deliver it on its own
        if self._digest is None or not self._digest.applies(entry):
            return False
        moment = next_local(now, contact.timezone, self._digest.at)
        day = local_date(moment, contact.timezone).isoformat()
        owner = entry.action.recipient
        digest_id = f"{DIGEST_PREFIX}{owner.id}:{day}"
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
        if digest_id not in digests:  # once per owner and day in a tick, not per reminder
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
            digests[digest_id] = digest
        entry.digest_id = digest_id
        self._defer(entry, moment + self._digest.grace, "digest", now, result)
        return True

    def _unknown(self, entry: Entry, now: datetime, result: HandlerResult) -> bool:
        """The contact has not arrived (yet): its profile event may still be on its way.
        True if the entry waits for it, False if it failed (waited too long); the caller saves
        it either way."""
        waiting_since = max(entry.created_at, entry.action.due_at)
        if now - waiting_since < self._limits.unknown_recipient_wait:
            retry = now + self._limits.unknown_recipient_retry
            self._defer(entry, retry, "unknown_recipient", now, result)
            return True
        entry.state, entry.reason, entry.unpublished = "failed", "unknown_recipient", True
        entry.updated_at = now
        return False

    def _defer(
        self, entry: Entry, until: datetime, reason: str, now: datetime, result: HandlerResult
    ) -> None:
        """Move the entry to ``until`` (the caller saves it). A deferral is published when its
        reason is new (an entry waiting for its contact does not announce every look)."""
        announce = entry.reason != reason
        entry.next_at, entry.reason, entry.deferrals = until, reason, entry.deferrals + 1
        entry.updated_at = now
        if announce:
            result.messages.append(self._outcome(entry, "deferred", now))
            result.after_commit.append(
                lambda: OUTCOMES.labels(entry.action.kind, "deferred", reason).inc()
            )

    async def _attempt(
        self,
        entry: Entry,
        contact: Contact | None,
        result: HandlerResult,
        deadline: float,
        halted: asyncio.Event,
    ) -> Entry:
        """One attempt. Sends to one provider wait at its gate (as many as its pool has
        connections); the circuit and the tick's time budget are checked after the wait, so a
        circuit that opened meanwhile stops this send too, and a slow provider cannot hold the
        tick (and the partition) for long: what is left stays due for the next tick.

        Once any attempt of the tick fails to write the ledger (MongoDB went away), no further
        send starts: a message sent now could not be recorded and would be sent again, so the
        repeats a database outage can cause are bounded by the sends already in flight."""
        provider = self._provider(entry, contact)
        gate = (
            self._gates.setdefault(provider, asyncio.Semaphore(self._concurrency(entry)))
            if provider
            else contextlib.nullcontext()
        )
        async with gate:
            if time.monotonic() > deadline or halted.is_set():
                return entry
            try:
                return await self._attempt_now(entry, contact, provider, self._clock(), result)
            except BaseException:
                halted.set()
                raise

    async def _attempt_now(
        self,
        entry: Entry,
        contact: Contact | None,
        provider: str | None,
        now: datetime,
        result: HandlerResult,
    ) -> Entry:
        kind = entry.action.kind
        closed_at = self._breakers.closed_at(provider, now) if provider else None
        if closed_at is not None:
            self._defer(entry, closed_at, "circuit_open", now, result)
            await self._ledger.save(entry)
            return entry
        started = time.perf_counter()
        try:
            folded = await self._send(entry, contact, now)
        except DeliveryError as exc:
            ATTEMPTS.labels(kind, "transient" if exc.transient else "permanent").inc()
            await self._failed(entry, exc, provider, contact, self._clock(), result)
            return entry
        except Exception as exc:
            if is_transient(exc):  # our own store (tasks) unavailable: try again later
                error: DeliveryError = TransientDeliveryError("store_unavailable", repr(exc))
                ATTEMPTS.labels(kind, "transient").inc()
            else:  # a bug or an input no channel can carry: this entry only
                log.exception("delivery attempt failed unexpectedly", extra={"key": entry.key})
                ATTEMPTS.labels(kind, "permanent").inc()
                error = PermanentDeliveryError("internal_error", type(exc).__name__)
            await self._failed(entry, error, None, contact, self._clock(), result)
            return entry
        SEND_SECONDS.labels(kind).observe(time.perf_counter() - started)
        ATTEMPTS.labels(kind, "ok").inc()
        if provider:
            self._breakers.succeeded(provider)
        now = self._clock()
        await self._ledger.mark_digested(folded, now)  # before the digest itself is final
        entry.attempts += 1
        entry.state, entry.sent_at, entry.unpublished, entry.reason = "sent", now, True, None
        entry.updated_at = now
        await self._ledger.save(entry)  # at once: this write closes the duplicate window
        return entry

    def _concurrency(self, entry: Entry) -> int:
        return self._channels.email.size if entry.action.kind == "email" else 8

    async def _failed(
        self,
        entry: Entry,
        exc: DeliveryError,
        provider: str | None,
        contact: Contact | None,
        now: datetime,
        result: HandlerResult,
    ) -> None:
        entry.attempts += 1
        entry.updated_at = now
        entry.detail = exc.detail[:300] or None
        if exc.transient and entry.attempts < self._limits.max_attempts:
            if provider:
                self._breakers.failed(provider, now)
            retry_after = getattr(exc, "retry_after", None)
            # the provider's hint is honoured up to a day (a hostile or broken Retry-After
            # must not park an entry for years, nor overflow the clock)
            hint = min(retry_after or 0.0, RETRY_AFTER_CAP_S)
            delay = max(self._delay(entry.attempts), hint)
            entry.next_at, entry.reason = now + timedelta(seconds=delay), exc.reason
            entry.deferrals += 1
            result.messages.append(self._outcome(entry, "deferred", now))
            reason = exc.reason
            result.after_commit.append(
                lambda: OUTCOMES.labels(entry.action.kind, "deferred", reason).inc()
            )
        else:
            if exc.transient and provider:
                self._breakers.failed(provider, now)
            reason = exc.reason if not exc.transient else "retries_exhausted"
            entry.state, entry.reason, entry.unpublished = "failed", reason, True
            if not exc.transient:
                entry.detail = f"{exc.reason}: {exc.detail}"[:300]
            if isinstance(exc, RecipientRefused) and contact is not None and contact.email:
                await self._policy.suppress(contact.email, exc.reason, now)
        await self._ledger.save(entry)

    def _delay(self, attempts: int) -> float:
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempts
        return float(self._backoff(state))

    def _provider(self, entry: Entry, contact: Contact | None) -> str | None:
        kind = entry.action.kind
        if kind == "email":
            return self._channels.email.server.name
        if kind == "webhook" and self._channels.webhook_url:
            return f"webhook:{urlsplit(self._channels.webhook_url).hostname}"
        if kind == "chat" and contact is not None and contact.chat_webhook_url:
            return f"chat:{urlsplit(contact.chat_webhook_url).hostname}"
        return None

    # -- the channels ------------------------------------------------------------------------

    async def _send(self, entry: Entry, contact: Contact | None, now: datetime) -> list[str]:
        """Deliver one entry; returns the keys of the digest members it delivered, if any."""
        action = entry.action
        locale = contact.locale if contact and action.recipient.kind == "staff" else action.locale
        unsubscribe = (
            self._unsubscribes.url(entry.recipient) if action.priority == MARKETING else None
        )
        folded: list[str] = []
        if entry.key.startswith(DIGEST_PREFIX):
            rendered, folded = await self._render_digest(entry, locale, contact)
        else:
            rendered = self._render(action, locale, contact, unsubscribe)
        channels = self._channels
        if action.kind == "email":
            if contact is None or not contact.email:
                raise PermanentDeliveryError("no_address", "the recipient has no e-mail address")
            try:
                message = build_message(
                    key=entry.key,
                    sender=channels.mail_from,
                    to_address=contact.email,
                    to_name=contact.name,
                    rendered=rendered,
                    domain=channels.message_id_domain,
                    now=now,
                    unsubscribe_url=unsubscribe,
                )
            except (ValueError, TypeError, MessageError) as exc:  # e.g. a name with a newline
                raise PermanentDeliveryError("invalid_message", str(exc)[:200]) from exc
            await channels.email.send(message)
        elif action.kind == "chat":
            if contact is None or not contact.chat_webhook_url:
                raise PermanentDeliveryError("no_chat_webhook", "the recipient has no chat bot")
            await channels.chat.send(
                contact.chat_webhook_url,
                contact.chat_platform,  # type: ignore[arg-type]
                rendered.subject,
                rendered.text,
            )
        elif action.kind == "webhook":
            if not channels.webhook_url or channels.webhook is None:
                raise PermanentDeliveryError("no_webhook_endpoint", "UPKEEP_NOTIFIER_WEBHOOK_URL")
            payload = {
                "action": action.model_dump(mode="json"),
                "message": {"subject": rendered.subject, "text": rendered.text},
            }
            await channels.webhook.send(channels.webhook_url, entry.key, payload)
        else:
            await channels.tasks.create(
                Task(
                    id=entry.key,
                    owner=action.recipient.id,
                    title=rendered.subject,
                    description=rendered.text,
                    rule=action.rule,
                    subject=action.subject,
                    due_at=action.due_at,
                    created_at=now,
                )
            )
        return folded

    async def _render_digest(
        self, entry: Entry, locale: str, contact: Contact | None
    ) -> tuple[Rendered, list[str]]:
        """The digest and the members it folds (a member whose own template fails is left out:
        it is delivered, and fails, on its own)."""
        items, folded = [], []
        for member in sorted(await self._ledger.members(entry.key), key=lambda e: e.next_at):
            try:
                r = self._render(member.action, locale, contact, None)
            except PermanentDeliveryError:
                continue
            items.append({"rule": member.action.rule, "subject": r.subject, "text": r.text})
            folded.append(member.key)
        if not folded:
            raise PermanentDeliveryError("empty_digest", "every member was delivered on its own")
        data = {**entry.action.data, "count": len(items), "items": items}
        return self._templates.render(
            DIGEST_TEMPLATE, locale, data, {"recipient_name": contact.name if contact else None}
        ), folded

    def _render(
        self, action: ActionMessage, locale: str, contact: Contact | None, unsubscribe: str | None
    ) -> Rendered:
        extra = {
            "unsubscribe_url": unsubscribe,
            "recipient_name": contact.name if contact is not None else None,
        }
        return self._templates.render(action.template, locale, action.data, extra)

    # -- what is published -------------------------------------------------------------------

    def _outcome(self, entry: Entry, outcome: Outcome, now: datetime) -> Outgoing:
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
        )
        return Outgoing(
            self._deliveries_topic, message.model_dump_json().encode(), action.subject.encode()
        )

    def _dead_letter(self, entry: Entry) -> DeadLetter:
        record = FakeRecord(
            self._actions_topic,
            entry.partition,
            entry.offset,
            entry.action.model_dump_json().encode(),
            entry.action.subject.encode(),
        )
        return DeadLetter(record, "delivery_failed", f"{entry.reason}: {entry.detail or ''}"[:500])


async def _all(aws: Iterable[Awaitable[T]]) -> list[T]:
    """Like ``gather``, but every awaitable finishes before the first error is raised: a send
    must never be left running while the tick is retried (it would be sent twice)."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    for outcome in results:
        if isinstance(outcome, BaseException):
            raise outcome
    return results  # type: ignore[return-value]


def _contact(record: Record) -> Contact | None:
    try:
        event = CanonicalEvent.from_json(record.value or b"")
        return contact_from(event, event.payload())
    except (ValidationError, ValueError, KeyError):
        return None  # not ours to judge: rules dead-letters what is wrong on the events topic
