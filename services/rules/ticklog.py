"""The tick log: which timers each committed tick fired, so a fired timer is never fired again.

A tick publishes the actions of the timers it fired in one Kafka transaction, then deletes the
timers from MongoDB. The deletion cannot join the transaction, so a crash between the commit
and the deletion would leave fired timers behind to fire again. To close that gap, the same
transaction writes one record per events partition to ``upkeep.rules.ticks.v1`` (compacted,
partition *p* for events partition *p*): the timers the tick fired there and the last slot
published of each scheduled job. The record is visible exactly when the actions are.

When a replica is given a partition, it reads that partition's last committed record before
its first tick there and deletes the timers listed (those still pending at the same due time):
whatever the previous owner fired and committed is never fired again; whatever it fired but did
not commit is not listed, and fires again — at-least-once plus this reconciliation makes each
timer occurrence publish its actions exactly once.

A transaction that is still undecided (the broker's last stable offset is below the high
watermark: a crashed owner's transaction that the coordinator has not yet aborted, or a commit
whose markers are still being written) could hide a record, so reconciliation waits until the
partition is settled: ticks of that partition pause for at most the transaction timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import AwareDatetime, BaseModel

from services.rules.sdk import Timer
from shared.kafka.clients import back_off_failed_metadata, connection_kwargs
from shared.kafka.messages import Outgoing
from shared.settings import KafkaSettings

log = logging.getLogger(__name__)


class FiredTimer(BaseModel):
    rule: str
    subject: str
    name: str
    due_at: AwareDatetime


LEGACY_WEEKLY_JOB = "churn/weekly-at-risk"  # what ``weekly_slot`` of older entries recorded


def job_key(rule: str, job: str) -> str:
    return f"{rule}/{job}"


class TickEntry(BaseModel):
    """What one committed tick did in one events partition."""

    partition: int
    fired: list[FiredTimer] = []
    schedule_slots: dict[str, AwareDatetime] = {}  # the last slot published, by job
    weekly_slot: AwareDatetime | None = None  # older entries: the churn rule's weekly list

    def timers(self) -> list[Timer]:
        """The fired timers, as :meth:`TimerStore.remove_fired` matches them (id, due time)."""
        return [Timer(f.rule, f.subject, f.name, f.due_at) for f in self.fired]

    def slots(self) -> dict[str, datetime]:
        """The last slot published of each scheduled job (older entries' weekly slot too)."""
        found: dict[str, datetime] = dict(self.schedule_slots)
        if self.weekly_slot is not None:
            found.setdefault(LEGACY_WEEKLY_JOB, self.weekly_slot)
        return found


class TickLog(Protocol):
    def entry(self, entry: TickEntry) -> Outgoing:
        """The record to publish in the tick's transaction."""
        ...

    async def last(self, partitions: Collection[int]) -> dict[int, TickEntry | None]:
        """The last committed entry of each settled events partition (``None``: no entry yet).
        Partitions with an undecided transaction are left out: ask again at the next tick."""
        ...

    async def close(self) -> None: ...


@dataclass
class KafkaTickLog:
    kafka: KafkaSettings
    topic: str
    window: int = 16  # offsets read back from the end at first (an entry plus its markers)

    def __post_init__(self) -> None:
        self._committed: AIOKafkaConsumer | None = None
        self._uncommitted: AIOKafkaConsumer | None = None

    def entry(self, entry: TickEntry) -> Outgoing:
        return Outgoing(
            self.topic,
            entry.model_dump_json().encode(),
            str(entry.partition).encode(),
            partition=entry.partition,
        )

    async def last(self, partitions: Collection[int]) -> dict[int, TickEntry | None]:
        """Three offset requests for all partitions, then a short read of the partitions that
        have entries, widening the window only where it held no entry."""
        if not partitions:
            return {}
        committed, uncommitted = await self._consumers()
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        committed.assign(tps)
        stable = await committed.end_offsets(tps)  # read_committed: the last stable offsets
        high = await uncommitted.end_offsets(tps)
        begin = await committed.beginning_offsets(tps)
        found: dict[int, TickEntry | None] = {}
        todo: dict[TopicPartition, int] = {}
        for tp in tps:
            if stable[tp] < high[tp]:
                log.info("tick log partition not settled", extra={"partition": tp.partition})
            elif stable[tp] == begin[tp]:
                found[tp.partition] = None
            else:
                todo[tp] = max(begin[tp], stable[tp] - self.window)
        while todo:
            last = await self._read(committed, todo, stable)
            widen = {}
            for tp, start in todo.items():
                if last.get(tp) is not None or start == begin[tp]:
                    found[tp.partition] = last.get(tp)
                else:  # only aborted records and markers so far: look further back
                    widen[tp] = max(begin[tp], start - (stable[tp] - start) * 8)
            todo = widen
        return found

    async def _read(
        self,
        consumer: AIOKafkaConsumer,
        starts: dict[TopicPartition, int],
        ends: dict[TopicPartition, int],
    ) -> dict[TopicPartition, TickEntry]:
        """The last entry of each partition between its start and end offsets."""
        for tp, start in starts.items():
            consumer.seek(tp, start)
        values: dict[TopicPartition, bytes] = {}
        pending = set(starts)
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=1000)
            if not batch:
                break  # only control markers left before the ends
            for tp, records in batch.items():
                key = str(tp.partition).encode()
                for record in records:
                    if record.key == key and record.value is not None:
                        values[tp] = record.value
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        return {tp: TickEntry.model_validate(orjson.loads(v)) for tp, v in values.items()}

    async def _consumers(self) -> tuple[AIOKafkaConsumer, AIOKafkaConsumer]:
        if self._committed is None or self._uncommitted is None:
            await self.close()
            self._committed = self._consumer("read_committed")
            self._uncommitted = self._consumer("read_uncommitted")
            try:
                await self._committed.start()
                await self._uncommitted.start()
            except BaseException:
                await self.close()
                raise
        return self._committed, self._uncommitted

    def _consumer(self, isolation: str) -> AIOKafkaConsumer:
        return back_off_failed_metadata(
            AIOKafkaConsumer(
                **connection_kwargs(self.kafka, "rules-ticklog"),
                group_id=None,
                enable_auto_commit=False,
                isolation_level=isolation,
            )
        )

    async def close(self) -> None:
        for consumer in (self._committed, self._uncommitted):
            if consumer is not None:
                try:
                    await consumer.stop()
                except Exception:
                    log.warning("tick log consumer did not stop cleanly", exc_info=True)
        self._committed = self._uncommitted = None


def tick_entries(
    fired: Sequence[tuple[int, Timer]],
    schedule_partition: int,
    slots: Mapping[str, datetime],
    *,
    scheduled_ran: bool,
) -> list[TickEntry]:
    """One entry per partition in which timers fired (and for the schedule partition when a
    scheduled job ran). The schedule partition's entry always carries the last slot of every
    job: compaction keeps only the latest entry of each partition."""
    by_partition: dict[int, list[FiredTimer]] = {}
    for partition, timer in fired:
        by_partition.setdefault(partition, []).append(
            FiredTimer(rule=timer.rule, subject=timer.subject, name=timer.name, due_at=timer.due_at)
        )
    if scheduled_ran:
        by_partition.setdefault(schedule_partition, [])
    return [
        TickEntry(
            partition=p,
            fired=timers,
            schedule_slots=dict(slots) if p == schedule_partition else {},
        )
        for p, timers in sorted(by_partition.items())
    ]
