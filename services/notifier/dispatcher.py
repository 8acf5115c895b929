"""Delivery: due ledger entries out to their channels (what puts them in the ledger is
:mod:`services.notifier.intake`).

:meth:`Dispatcher.tick` runs every ``dispatch_interval_s`` for the actions partitions this
replica owns: it takes the due ledger entries, applies the policy, sends through each kind's
:class:`~services.notifier.channels.base.Channel`, writes each entry's new state right after its
attempt, and returns the outcomes (and dead letters) to publish in the tick's transaction.
Entries with a final state are flagged ``unpublished`` until that commits.

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
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from services.notifier.breaker import Breakers
from services.notifier.channels.base import Channel, Delivery, by_kind
from services.notifier.digest import Digest, Digests, is_digest
from services.notifier.directory import Contact, Directory
from services.notifier.entry import Entry
from services.notifier.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RecipientRefused,
    TransientDeliveryError,
)
from services.notifier.ledger import Ledger
from services.notifier.limits import Limits
from services.notifier.outcomes import (
    ATTEMPTS,
    OUTCOMES,
    SEND_SECONDS,
    dead_letter,
    outcome_message,
)
from services.notifier.policy import MARKETING, Defer, Rules, Send, Suppress, decide
from services.notifier.preferences import PolicyStore
from services.notifier.templates import Templates
from services.notifier.unsubscribe import Unsubscribes
from shared.errors import is_transient
from shared.events.deliveries import Outcome
from shared.kafka.messages import HandlerResult, Outgoing

log = logging.getLogger(__name__)
T = TypeVar("T")
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Dispatcher:
    def __init__(
        self,
        ledger: Ledger,
        directory: Directory,
        policy: PolicyStore,
        templates: Templates,
        channels: Iterable[Channel],
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
        self._templates, self._unsubscribes = templates, unsubscribes
        self._channels = by_kind(channels)
        self._actions_topic, self._deliveries_topic = actions_topic, deliveries_topic
        self._rules = rules or Rules()
        self._limits = limits or Limits()
        self._breakers = breakers or Breakers()
        self._digests = Digests(ledger, templates, digest)
        self._clock = clock
        self._gates: dict[str, asyncio.Semaphore] = {}

    @property
    def tick_topic(self) -> str:
        return self._actions_topic

    # -- dispatching -------------------------------------------------------------------------

    def revoked(self, partitions: set[int]) -> None:
        """Nothing to forget: the ledger in MongoDB is the only state."""

    async def tick(self, partitions: set[int]) -> HandlerResult:
        owned, result, now = sorted(partitions), HandlerResult(), self._clock()
        limit = self._limits.per_partition * len(owned)
        # one query each for all the partitions owned, both at once; due ones earliest first
        unpublished, due = await asyncio.gather(
            self._ledger.unpublished(owned, limit), self._ledger.due(owned, now, limit)
        )
        finished = {entry.key: entry for entry in unpublished}
        result.tick_soon = len(due) >= limit > 0  # more are due
        if due:
            finished.update((e.key, e) for e in await self._dispatch(due, now, result))
        await self._ledger.flush()  # the previous tick's published flags, if no save took them
        for entry in finished.values():
            result.messages.append(self._outcome(entry, entry.state, now))  # type: ignore[arg-type]
            if entry.state == "failed":
                result.dead_letters.append(dead_letter(entry, self._actions_topic))
        if finished:

            async def published() -> None:
                await self._ledger.mark_published(finished.keys())
                for e in finished.values():
                    OUTCOMES.labels(e.action.kind, e.state, e.reason or "").inc()

            result.after_commit.append(published)
        return result

    async def _dispatch(
        self, due: list[Entry], now: datetime, result: HandlerResult
    ) -> list[Entry]:
        """Decide for every due entry (in order, so caps see earlier decisions), save the
        decisions in one group commit, then attempt the sends concurrently (each provider's
        gate bounds its own). Returns the entries that reached a final state."""
        recipients = {e.recipient for e in due}
        # what the decisions need, one query each for the whole tick and all at once (the
        # driver pools connections); only the suppressions wait for the contacts' addresses
        contacts, prefs, sent_counts, digests = await asyncio.gather(
            self._directory.get(recipients),
            self._policy.preferences(recipients),
            self._ledger.sent_counts(
                {e.recipient for e in due if e.action.priority == MARKETING},
                now - self._rules.marketing_cap_window,
            ),
            self._ledger.get_many(self._digests.wanted(due)),
        )
        addresses = {c.email.lower() for c in contacts.values() if c.email}
        suppressed = await self._policy.suppressed(addresses)
        sends: list[tuple[Entry, Contact | None]] = []
        decided: list[Entry] = []  # final or deferred: saved together before any send
        for entry in due:
            contact = contacts.get(entry.recipient)
            channel = self._channels.get(entry.action.kind)
            if contact is None and channel is not None and channel.needs_contact:
                self._unknown(entry, now, result)
                decided.append(entry)
                continue
            if contact is None:  # tasks and webhooks need no contact
                sends.append((entry, None))
                continue
            until = await self._digests.hold(entry, contact, digests, now)
            if until is not None:
                self._defer(entry, until, "digest", now, result)
                decided.append(entry)
                continue
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
                entry.fail("internal_error", now)
                decided.append(entry)
                continue
            if isinstance(decision, Suppress):
                entry.suppress(decision.reason, now)
                decided.append(entry)
            elif isinstance(decision, Defer):
                self._defer(entry, decision.until, decision.reason, now, result)
                decided.append(entry)
            else:
                if entry.action.priority == MARKETING:
                    sent_counts[entry.recipient] = sent_counts.get(entry.recipient, 0) + 1
                sends.append((entry, contact))
        await _all(self._ledger.save(e) for e in decided)
        deadline = time.monotonic() + self._limits.tick_budget_s
        halted = asyncio.Event()  # a ledger write failed: start no more sends in this tick
        attempted = await _all(self._attempt(e, c, result, deadline, halted) for e, c in sends)
        return [e for e in decided + attempted if e.final]

    def _unknown(self, entry: Entry, now: datetime, result: HandlerResult) -> None:
        """No contact (yet): its profile event may still be on its way, for a while."""
        if now - max(entry.created_at, entry.action.due_at) < self._limits.unknown_recipient_wait:
            retry = now + self._limits.unknown_recipient_retry
            self._defer(entry, retry, "unknown_recipient", now, result)
        else:
            entry.fail("unknown_recipient", now)

    def _defer(
        self, entry: Entry, until: datetime, reason: str, now: datetime, result: HandlerResult
    ) -> None:
        """Move the entry to ``until`` (the caller saves it), announced if the reason is new."""
        if entry.defer(until, reason, now):
            result.messages.append(self._outcome(entry, "deferred", now))
            kind = entry.action.kind
            result.after_commit.append(lambda: OUTCOMES.labels(kind, "deferred", reason).inc())

    async def _attempt(
        self,
        entry: Entry,
        contact: Contact | None,
        result: HandlerResult,
        deadline: float,
        halted: asyncio.Event,
    ) -> Entry:
        """One attempt. Sends to one provider wait at its gate (as many as the channel allows
        at once); the circuit and the tick's time budget are checked after the wait, so a
        circuit that opened meanwhile stops this send too, and a slow provider cannot hold the
        tick (and the partition) for long: what is left stays due for the next tick.

        Once any attempt of the tick fails to write the ledger (MongoDB went away), no further
        send starts: a message sent now could not be recorded and would be sent again, so the
        repeats a database outage can cause are bounded by the sends already in flight."""
        channel = self._channels.get(entry.action.kind)
        provider = channel.provider(contact) if channel is not None else None
        gate: contextlib.AbstractAsyncContextManager[object] = contextlib.nullcontext()
        if channel is not None and provider is not None:
            gate = self._gates.setdefault(provider, asyncio.Semaphore(channel.concurrency))
        async with gate:
            if time.monotonic() > deadline or halted.is_set():
                return entry
            try:
                await self._attempt_now(entry, channel, contact, provider, result)
                await self._ledger.save(entry)  # at once: this write closes the duplicate window
            except BaseException:
                halted.set()
                raise
        return entry

    async def _attempt_now(
        self,
        entry: Entry,
        channel: Channel | None,
        contact: Contact | None,
        provider: str | None,
        result: HandlerResult,
    ) -> None:
        kind, now = entry.action.kind, self._clock()
        closed_at = self._breakers.closed_at(provider, now) if provider else None
        if closed_at is not None:
            self._defer(entry, closed_at, "circuit_open", now, result)
            return
        started = time.perf_counter()
        try:
            if channel is None:
                raise PermanentDeliveryError("no_channel", f"no channel delivers {kind!r}")
            folded = await self._send(entry, channel, contact, now)
        except Exception as exc:
            error = exc if isinstance(exc, DeliveryError) else _unexpected(exc, entry.key)
            ATTEMPTS.labels(kind, "transient" if error.transient else "permanent").inc()
            blame = provider if error is exc else None  # the provider's error, not ours
            await self._failed(entry, error, blame, contact, result)
            return
        SEND_SECONDS.labels(kind).observe(time.perf_counter() - started)
        ATTEMPTS.labels(kind, "ok").inc()
        if provider:
            self._breakers.succeeded(provider)
        now = self._clock()
        await self._ledger.mark_digested(folded, now)  # before the digest itself is final
        entry.sent(now)

    async def _failed(
        self,
        entry: Entry,
        exc: DeliveryError,
        provider: str | None,
        contact: Contact | None,
        result: HandlerResult,
    ) -> None:
        now = self._clock()
        if exc.transient and provider:
            self._breakers.failed(provider, now)
        retry_in = self._limits.retry_in(entry.attempts + 1, exc)
        if retry_in is not None:
            entry.retry(now + timedelta(seconds=retry_in), exc.reason, now, exc.detail)
            result.messages.append(self._outcome(entry, "deferred", now))
            kind, reason = entry.action.kind, exc.reason
            result.after_commit.append(lambda: OUTCOMES.labels(kind, "deferred", reason).inc())
            return
        entry.attempts += 1
        if exc.transient:
            entry.fail("retries_exhausted", now, exc.detail)
        else:
            entry.fail(exc.reason, now, f"{exc.reason}: {exc.detail}")
        if isinstance(exc, RecipientRefused) and contact is not None and contact.email:
            await self._policy.suppress(contact.email, exc.reason, now)

    async def _send(
        self, entry: Entry, channel: Channel, contact: Contact | None, now: datetime
    ) -> list[str]:
        """Render and deliver one entry; returns the keys of the digest members it delivered."""
        action = entry.action
        locale = contact.locale if contact and action.recipient.kind == "staff" else action.locale
        unsubscribe = (
            self._unsubscribes.url(entry.recipient) if action.priority == MARKETING else None
        )
        folded: list[str] = []
        if is_digest(entry):
            rendered, folded = await self._digests.render(entry, locale, contact)
        else:
            name = contact.name if contact is not None else None
            rendered = self._templates.render_action(action, locale, name, unsubscribe)
        await channel.send(Delivery(entry.key, action, contact, rendered, now, unsubscribe))
        return folded

    def _outcome(self, entry: Entry, outcome: Outcome, now: datetime) -> Outgoing:
        return outcome_message(entry, outcome, now, self._deliveries_topic)


def _unexpected(exc: Exception, key: str) -> DeliveryError:
    """An attempt that raised something no channel raises: our own store (tasks) unavailable is
    tried again later; anything else (a bug, an input no channel can carry) fails this entry."""
    if is_transient(exc):
        return TransientDeliveryError("store_unavailable", repr(exc))
    log.exception("delivery attempt failed unexpectedly", extra={"key": key})
    return PermanentDeliveryError("internal_error", type(exc).__name__)


async def _all(aws: Iterable[Awaitable[T]]) -> list[T]:
    """Like ``gather``, but every awaitable finishes before the first error is raised: a send
    must never be left running while the tick is retried (it would be sent twice)."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    for outcome in results:
        if isinstance(outcome, BaseException):
            raise outcome
    return results  # type: ignore[return-value]
