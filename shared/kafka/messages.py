"""What passes between a service and the consumer loop: the handler contracts and the value
objects they exchange."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from shared.events.envelope import CONTENT_TYPE, CanonicalEvent

CANONICAL_HEADERS: Headers = (("content-type", CONTENT_TYPE.encode()),)

Headers = tuple[tuple[str, bytes], ...]


def canonical_message(topic: str, event: CanonicalEvent) -> Outgoing:
    """A canonical event as a structured-mode record keyed by its subject."""
    return Outgoing(topic, event.to_json(), event.subject.encode(), CANONICAL_HEADERS)


class Record(Protocol):
    """The fields of a consumed Kafka record that Upkeep uses (aiokafka's ``ConsumerRecord``
    has them; unit tests use :class:`StoredRecord`)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record built by hand rather than consumed: a ledger entry's action dead-lettered, a
    benchmark's input, a test's."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = ()
    timestamp: int = 0


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish. Keyed by subject id so one partition owns one subject; an explicit
    ``partition`` overrides the key's (for logs that mirror another topic's partitions)."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: Headers = ()
    partition: int | None = None

    @classmethod
    def json(cls, topic: str, key: str | None, body: Any, headers: Headers = ()) -> Outgoing:
        return cls(topic, orjson.dumps(body), key.encode() if key is not None else None, headers)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A consumed record that cannot be processed, and why (``reason`` is a short code)."""

    record: Record
    reason: str
    detail: str = ""


@dataclass(slots=True)
class HandlerResult:
    """What a handler made of one batch: messages to publish, records to dead-letter, and
    callbacks to run once all of it is committed (metrics, caches).

    ``tick_soon``: work is due now (a timer set for now, a delivery to attempt, or a tick that
    stopped at its limit), so the loop ticks right after this commit instead of waiting for the
    tick interval. Work due now is done now, and the interval only paces the polling for
    work that comes due later."""

    messages: list[Outgoing] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    after_commit: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)
    tick_soon: bool = False

    def extend(self, other: HandlerResult) -> None:
        self.messages.extend(other.messages)
        self.dead_letters.extend(other.dead_letters)
        self.after_commit.extend(other.after_commit)
        self.tick_soon = self.tick_soon or other.tick_soon


class BatchHandler(Protocol):
    """What a service plugs into the loop."""

    async def handle(self, records: Sequence[Record]) -> HandlerResult:
        """Called once per fetched batch, before its offsets are committed.

        Records of one partition arrive in offset order. Return the messages to publish and the
        records to dead-letter; both are committed together with the offsets. Effects on other
        stores (MongoDB) must be idempotent: a batch can be handed over again after a crash or a
        transient failure. Raise a transient error (:mod:`shared.errors`) to roll back and retry.
        """
        ...


class Ticker(Protocol):
    """Periodic work owned by whoever holds the partitions (e.g. firing due timers). Partitions
    are plain numbers: those of :attr:`tick_topic` this consumer owns."""

    @property
    def tick_topic(self) -> str:
        """The consumed topic whose partitions the ticker works for."""
        ...

    def revoked(self, partitions: set[int]) -> None:
        """Called under the lock when partitions are taken away: anything the ticker knows
        about them may be stale by the time they come back."""
        ...

    async def tick(self, partitions: set[int]) -> HandlerResult:
        """Called every ``tick_interval_s`` with the partitions this consumer owns, under the
        same lock as batches (never during a rebalance). Its messages are published in a
        transaction of their own; its ``after_commit`` hooks run once they are committed."""
        ...
