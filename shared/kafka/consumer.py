"""The consume → handle → publish → commit loop every service runs.

Guarantees, in order of importance:

* **Nothing is lost.** Offsets are committed only after the batch's effects: with a transactional
  producer the published messages (results *and* dead letters) and the consumed offsets are
  committed in one Kafka transaction, so downstream ``read_committed`` consumers see each result
  exactly once; without one, results are flushed before offsets are committed (at-least-once).
* **Bad input never stops the loop.** A handler reports bad records as :class:`DeadLetter`; a record
  whose handling raises an unexpected error is isolated (the batch is re-handled one record at a
  time) and dead-lettered as ``handler_error``.
* **A failed dependency is retried, not dead-lettered.** Transient errors (see
  :mod:`shared.errors`) roll the batch back and retry it with jittered exponential backoff.
* **Per-partition order.** Records of a partition are handed over in offset order; one batch is
  in flight at a time.
* **Clean rebalances and shutdown.** Revocation waits for the batch in flight to commit; a batch
  fetched before a rebalance is dropped (its partitions are re-read by their new owner).
  :meth:`ConsumerLoop.stop` lets the batch in flight finish and commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from tenacity import AsyncRetrying, RetryCallState, RetryError, retry_if_exception
from tenacity.wait import wait_random_exponential

from shared import metrics
from shared.errors import is_transient
from shared.kafka.dlq import dead_letter_message
from shared.kafka.messages import BatchHandler, DeadLetter, HandlerResult, Outgoing, Record, Ticker
from shared.kafka.progress import ProgressStore

log = logging.getLogger(__name__)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: ConsumerLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._loop._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._loop._on_assigned(set(assigned))


class ConsumerLoop:
    def __init__(
        self,
        *,
        service: str,
        consumer_factory: Callable[[], AIOKafkaConsumer],
        topics: Sequence[str],
        handler: BatchHandler,
        group_id: str,
        dlq_topic: str,
        producer_factory: Callable[[], AIOKafkaProducer] | None = None,
        transactional: bool = False,
        batch_timeout_ms: int = 200,
        max_records: int = 500,
        progress: ProgressStore | None = None,
        ticker: Ticker | None = None,
        tick_interval_s: float = 1.0,
    ) -> None:
        self.service = service
        self._consumer_factory = consumer_factory
        self._consumer = consumer_factory()
        self._topics = list(topics)
        self._handler = handler
        self._group_id = group_id
        self._dlq_topic = dlq_topic
        self._producer_factory = producer_factory
        self._producer: AIOKafkaProducer | None = None
        self._transactional = transactional
        self._batch_timeout_ms = batch_timeout_ms
        self._max_records = max_records
        self._progress = progress
        self._ticker = ticker
        self._tick_interval_s = tick_interval_s
        self._ticked = -math.inf  # the first tick at once (monotonic time may start near 0)
        self._tick_requested = False  # a committed result said work is due now
        # where each partition was positioned at the last assignment (progress guard only)
        self._starts: dict[TopicPartition, int] = {}
        self._lock = asyncio.Lock()
        self._generation = 0
        self._stopping = asyncio.Event()
        self._failing = False
        self._started = False
        self._lag_updated = 0.0
        self._behind: int | None = None  # records not yet read, at the last lag measurement

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Started and not currently failing to commit batches."""
        return self._started and not self._failing and not self._stopping.is_set()

    @property
    def caught_up(self) -> bool:
        """Ready, with partitions, and at most a batch left to read at the last lag
        measurement (every few seconds) since the partitions were assigned: what was
        published until moments ago is counted. For work that must not run on half the data
        (analytics' scheduled reports); steady traffic leaves a little lag, which is fine."""
        behind = self._behind
        return (
            self.ready
            and bool(self.assignment)
            and behind is not None
            and behind <= self._max_records
        )

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment())

    async def check_ready(self) -> bool:
        """Readiness check for ``/readyz``: see :attr:`ready`."""
        return self.ready

    async def probe(self) -> bool:
        """Readiness: the broker answers a metadata request."""
        await self._consumer.topics()
        return True

    def stop(self) -> None:
        """Ask the loop to finish the batch in flight, commit it and return."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume until :meth:`stop`; always closes the consumer and producer."""
        try:
            try:
                await self._start_clients()
            except RetryError:
                return  # stopped before Kafka came up
            self._started = True
            while not self._stopping.is_set():
                # a batch belongs to the assignment it was fetched under: if a rebalance
                # completes while we wait, the batch is dropped and re-read from committed work
                generation = self._generation
                batch = await self._consumer.getmany(
                    timeout_ms=self._batch_timeout_ms, max_records=self._max_records
                )
                if batch:
                    await self._process(batch, generation)
                await self._maybe_tick()
                await self._update_lag(force=bool(batch))
        finally:
            self._started = False
            await self._close_clients()

    async def _start_clients(self) -> None:
        """Connect, retrying while Kafka is unreachable (the service reports not ready)."""
        async for attempt in self._retrying():
            with attempt:
                await self._close_clients()
                self._consumer = self._consumer_factory()
                if self._producer_factory is not None:
                    self._producer = self._producer_factory()
                    await self._producer.start()
                self._consumer.subscribe(self._topics, listener=_Listener(self))
                await self._consumer.start()
        self._failing = False

    async def _close_clients(self) -> None:
        producer, self._producer = self._producer, None
        for client in (self._consumer, producer):
            if client is None:
                continue
            try:
                await client.stop()
            except Exception:
                log.exception("error while closing a Kafka client")

    async def _reset_producer(self) -> None:
        """Replace the producer after a failed transaction (a new one fences the old).

        If the new one cannot start, ``_producer`` stays ``None`` and the next attempt tries
        again (the error is raised, so the batch is retried, never committed without it)."""
        old, self._producer = self._producer, None
        if old is not None:
            try:
                await old.stop()
            except Exception:
                log.warning("producer did not stop cleanly", exc_info=True)
        if self._producer_factory is not None:
            producer = self._producer_factory()
            try:
                await producer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self._producer = producer

    # -- rebalances --------------------------------------------------------------------------

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:  # the batch in flight commits before we let go
            self._generation += 1
            self._starts.clear()
            if self._ticker is not None:
                self._ticker.revoked(_partitions_of(revoked, self._ticker.tick_topic))
        metrics.REBALANCES.labels("revoked").inc()
        for tp in revoked:
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(tp.topic, str(tp.partition))
        if revoked:
            log.info("partitions revoked", extra={"partitions": _names(revoked)})

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        metrics.REBALANCES.labels("assigned").inc()
        self._behind = None  # not known for the new partitions until measured again
        self._lag_updated = 0.0
        if self._progress is not None and assigned:
            async with self._lock:
                await self._position_partitions(assigned)
                # aiokafka may have handed out records from before the seeks: drop them (the
                # seeks set every position explicitly, so they are read again, nothing is lost)
                self._generation += 1
        log.info("partitions assigned", extra={"partitions": _names(assigned)})

    async def _position_partitions(self, assigned: set[TopicPartition]) -> None:
        """Start every assigned partition at the greater of Kafka's committed offset and the
        offset saved after our last commit (see :mod:`shared.kafka.progress`)."""
        try:
            saved = await self._progress.load(self._group_id, assigned)  # type: ignore[union-attr]
        except Exception:
            # without the guard we are still at-least-once; de-duplication downstream copes
            log.warning("could not read saved progress; using Kafka's offsets", exc_info=True)
            saved = {}
        beginnings = await self._consumer.beginning_offsets(list(assigned))
        for tp in assigned:
            committed = await self._consumer.committed(tp)
            start = max(committed if committed is not None else -1, saved.get(tp, -1))
            if start < 0:
                start = beginnings[tp]
            elif committed is None or start > committed:
                log.info(
                    "starting ahead of a stale committed offset",
                    extra={"partition": f"{tp.topic}/{tp.partition}", "offset": start},
                )
            self._consumer.seek(tp, start)
            self._starts[tp] = start

    # -- one batch ---------------------------------------------------------------------------

    async def _process(self, batch: dict[TopicPartition, list[Record]], generation: int) -> None:
        records = [record for tp in sorted(batch) for record in batch[tp]]
        offsets = {tp: recs[-1].offset + 1 for tp, recs in batch.items() if recs}
        started = time.perf_counter()
        result: HandlerResult = HandlerResult()
        messages: list[Outgoing] = []
        try:
            async for attempt in self._retrying():
                with attempt:
                    async with self._lock:
                        if generation != self._generation:
                            self._rewind(batch)
                            return
                        result = await self._handle_isolating(records)
                        messages = await self._commit(result, offsets)
                        await self._save_progress(offsets)
                        await _run_hooks(result)
        except RetryError:
            log.warning("stopping with an uncommitted batch; it will be consumed again")
            return
        self._failing = False
        self._tick_requested = self._tick_requested or result.tick_soon
        metrics.count_batch(records, result.dead_letters, messages)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_RECORDS.observe(len(records))

    def _retrying(self) -> AsyncRetrying:
        """Retry transient failures with jittered backoff until they pass or we stop."""
        return AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=wait_random_exponential(multiplier=0.2, max=10),
            stop=lambda _state: self._stopping.is_set(),
            sleep=self._sleep_unless_stopping,
            before_sleep=self._note_failure,
        )

    async def _maybe_tick(self) -> None:
        if self._ticker is None:
            return
        if not self._tick_requested and time.monotonic() - self._ticked < self._tick_interval_s:
            return
        self._ticked, self._tick_requested = time.monotonic(), False
        generation = self._generation
        result, messages, hooks_ok = HandlerResult(), list[Outgoing](), False
        try:
            async for attempt in self._retrying():
                with attempt:
                    async with self._lock:
                        if generation != self._generation:
                            return
                        owned = _partitions_of(self._consumer.assignment(), self._ticker.tick_topic)
                        result = await self._ticker.tick(owned)
                        messages = await self._commit(result, {})
                        hooks_ok = await _run_hooks(result)
        except RetryError:
            return
        except Exception:
            # a bug or bad data in periodic work must not stop consumption: the next tick
            # tries again (what it did not commit is still pending)
            metrics.TICK_FAILURES.inc()
            log.exception("a tick failed; it will run again")
            return
        self._failing = False  # a dependency that failed the tick is back
        # it stopped at its limit: more is due, unless its clean-up failed (rules would fire
        # the same timers again at once): then the interval paces the retries
        self._tick_requested = result.tick_soon and hooks_ok
        metrics.count_batch([], result.dead_letters, messages)

    def _rewind(self, batch: dict[TopicPartition, list[Record]]) -> None:
        """Drop a batch fetched before the last rebalance. Partitions positioned at that
        rebalance go back to where they were positioned (the batch may have been drained after
        the seek, which moved the position past it); others were reset by aiokafka."""
        log.info("dropping a batch fetched before a rebalance")
        assigned = self._consumer.assignment()
        for tp in batch:
            if tp in self._starts and tp in assigned:
                self._consumer.seek(tp, self._starts[tp])

    async def _handle_isolating(self, records: list[Record]) -> HandlerResult:
        """Hand the batch over; if it raises a non-transient error, find the culprit(s)."""
        try:
            return await self._handler.handle(records)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.exception("batch handler failed; retrying record by record")
        result = HandlerResult()
        for record in records:
            try:
                result.extend(await self._handler.handle([record]))
            except Exception as exc:
                if is_transient(exc):
                    raise
                log.exception(
                    "record failed", extra={"topic": record.topic, "offset": record.offset}
                )
                detail = f"{type(exc).__name__}: {exc}"
                result.dead_letters.append(DeadLetter(record, "handler_error", detail))
        return result

    async def _commit(
        self, result: HandlerResult, offsets: dict[TopicPartition, int]
    ) -> list[Outgoing]:
        """Publish the batch's messages and commit its offsets, atomically when transactional."""
        messages = list(result.messages)
        messages += [
            dead_letter_message(d, service=self.service, dlq_topic=self._dlq_topic)
            for d in result.dead_letters
        ]
        if self._transactional and self._producer is None:
            await self._reset_producer()  # a previous reset failed; raises while Kafka is away
        producer = self._producer
        if producer is not None and self._transactional:
            try:
                async with producer.transaction():
                    # every send must be acknowledged before the offsets join the transaction:
                    # aiokafka commits a transaction even if one of its batches failed
                    await asyncio.gather(*await _send_all(producer, messages))
                    if offsets:
                        await producer.send_offsets_to_transaction(offsets, self._group_id)
            except Exception:
                await self._reset_producer()
                raise
        else:
            if messages:
                if producer is None:
                    raise RuntimeError("handler produced messages but the loop has no producer")
                futures = await _send_all(producer, messages)
                await asyncio.gather(*futures)
            if offsets:
                await self._consumer.commit(offsets)
        return messages

    async def _save_progress(self, offsets: dict[TopicPartition, int]) -> None:
        """Runs while still holding the batch lock, so a revocation waits for it."""
        if self._progress is None:
            return
        try:
            await self._progress.save(self._group_id, offsets)
        except Exception:
            log.warning("could not save progress after a commit", exc_info=True)

    async def _note_failure(self, state: RetryCallState) -> None:
        self._failing = True
        metrics.BATCH_RETRIES.inc()
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "a dependency failed; will retry",
            extra={"attempt": state.attempt_number, "error": repr(exc)},
        )

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _update_lag(self, *, force: bool) -> None:
        """Export lag per assigned partition (at most every 2 s; one ListOffsets request)."""
        if time.monotonic() - self._lag_updated < (2 if force else 5):
            return
        assigned = list(self._consumer.assignment())
        if assigned:
            try:  # bounded: a slow broker must not hold up consumption
                await asyncio.wait_for(self._measure_lag(assigned), timeout=1.0)
            except Exception as exc:  # a rebalance or an unreachable broker: try next time
                log.debug("lag not updated: %r", exc)
        self._lag_updated = time.monotonic()

    async def _measure_lag(self, assigned: list[TopicPartition]) -> None:
        ends = await self._consumer.end_offsets(assigned)
        behind = 0
        for tp in assigned:
            position = await self._consumer.position(tp)
            lag = max(0, ends[tp] - position)
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)
            behind += lag
        self._behind = behind


def _partitions_of(partitions: Iterable[TopicPartition], topic: str) -> set[int]:
    return {tp.partition for tp in partitions if tp.topic == topic}


async def _run_hooks(result: HandlerResult) -> bool:
    """After-commit hooks: what they do is already committed, so a failing hook is logged and
    never rolls the batch back. Returns whether every hook succeeded."""
    succeeded = True
    for hook in result.after_commit:
        try:
            outcome = hook()
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            log.exception("an after-commit hook failed")
            succeeded = False
    return succeeded


async def _send_all(
    producer: AIOKafkaProducer, messages: list[Outgoing]
) -> list[asyncio.Future[object]]:
    return [
        await producer.send(
            m.topic, m.value, key=m.key, headers=list(m.headers), partition=m.partition
        )
        for m in messages
    ]


def _names(partitions: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in partitions)
