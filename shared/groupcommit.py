"""Group commit: many concurrent single-document writes, sent as few bulk writes.

A caller's ``await write(op)`` returns once *its* operation is durable (or raises if the bulk
write carrying it failed), exactly as a lone ``update_one`` would. While one bulk write is in
flight, the operations that arrive queue up and go together in the next one, so under load a
round trip carries many writes, and with a single caller nothing waits: there is no timer and
no batching delay. Operations are applied in arrival order (``ordered=True``), so two writes of
the same document end in the later one's state.

An operation can also be *carried*: queued without a caller waiting, it rides with the next
write (or an explicit :meth:`GroupCommit.flush`), for writes whose loss only repeats work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pymongo import UpdateMany, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import AutoReconnect, BulkWriteError

from shared.mongo import Document

Operation = UpdateOne | UpdateMany
log = logging.getLogger(__name__)

Queued = list[tuple[Operation, asyncio.Future[None]]]  # an operation and its caller's future


class GroupCommit:
    def __init__(self, collection: AsyncCollection[Document], max_batch: int = 500) -> None:
        self._collection = collection
        self._max_batch = max_batch
        self._queue: Queued = []
        self._in_flight: asyncio.Future[None] | None = None
        self.round_trips = 0  # bulk writes sent (for benchmarks and tests)

    async def write(self, op: Operation) -> None:
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((op, mine))
        try:
            while not mine.done():
                if self._in_flight is None:
                    await self._flush()  # this caller writes the queue (its own op among it)
                else:
                    await asyncio.shield(self._in_flight)  # then look again
        except asyncio.CancelledError:
            # like a lone update_one cancelled before it was sent: not written later either
            with contextlib.suppress(ValueError):
                self._queue.remove((op, mine))
            raise
        mine.result()  # raises what the bulk write carrying this operation raised

    def carry(self, op: Operation) -> asyncio.Future[None]:
        """Queue an operation nobody waits for: it rides with the next write (or :meth:`flush`).
        For writes whose loss only repeats work, e.g. clearing a flag that a crash would leave
        set; a failure is logged, not raised. Returns the future that settles once it is
        written (or failed)."""
        carried: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        carried.add_done_callback(_log_failure)
        self._queue.append((op, carried))
        return carried

    async def flush(self) -> None:
        """Write everything queued (carried operations included) before returning."""
        while self._queue:
            if self._in_flight is None:
                await self._flush()
            else:
                await asyncio.shield(self._in_flight)

    async def _flush(self) -> None:
        in_flight = self._in_flight = asyncio.get_running_loop().create_future()
        batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
        try:
            self.round_trips += 1
            await self._collection.bulk_write([op for op, _ in batch], ordered=True)
        except BulkWriteError as exc:
            # ordered: the operations before the first error were applied, the one at it
            # failed, the ones after it were never tried and go again with the next flush
            errors = exc.details.get("writeErrors") or []
            if not errors:  # e.g. a write concern error: nothing is known to be durable
                _fail(batch, exc)
            else:
                first = min(int(error["index"]) for error in errors)
                _succeed(batch[:first])
                _fail(batch[first : first + 1], exc)
                self._queue[:0] = batch[first + 1 :]
        except Exception as exc:
            _fail(batch, exc)
        except BaseException:
            # the writer was cancelled (shutdown): whether the others' writes landed is unknown
            _fail(batch, AutoReconnect("a grouped write was interrupted"))
            raise
        else:
            _succeed(batch)
        finally:
            self._in_flight = None
            in_flight.set_result(None)


def _succeed(batch: Queued) -> None:
    for _, waiter in batch:
        if not waiter.done():
            waiter.set_result(None)


def _fail(batch: Queued, exc: BaseException) -> None:
    for _, waiter in batch:
        if not waiter.done():
            waiter.set_exception(exc)
            waiter.exception()  # its caller re-raises it; one that was cancelled meanwhile won't


def _log_failure(carried: asyncio.Future[None]) -> None:
    if not carried.cancelled() and carried.exception() is not None:
        log.warning("a carried write failed: %r", carried.exception())
