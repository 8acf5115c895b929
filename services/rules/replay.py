"""``python -m services.rules replay --from <offset|time> --dry-run``: what would have fired.

Reads ``upkeep.events.v1`` from an offset (every partition) or a time (RFC 3339), without a
consumer group and without publishing anything. The rules — as configured now — are evaluated
over that history with in-memory state and timers and a clock that follows the events: before
each event, the timers due by its time fire. At the end, timers due by ``--until`` (default: now)
fire. Each action that would have been published is printed as one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TextIO

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from services.rules.engine import RulesEngine
from services.rules.registry import load_rules, read_config
from services.rules.settings import RulesSettings
from services.rules.store import InMemorySubjectStore, InMemoryTimerStore
from shared.events.envelope import CanonicalEvent
from shared.kafka.clients import connection_kwargs, make_admin
from shared.kafka.messages import HandlerResult, Record, StoredRecord


def parse_start(text: str) -> int | datetime:
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def partitions_of(settings: RulesSettings, topic: str) -> list[int]:
    admin = make_admin(settings.kafka, "rules-replay")
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(
        p["partition"]
        for d in described
        if d.get("error_code", 0) == 0
        for p in d.get("partitions", [])
    )


async def read_history(
    settings: RulesSettings, start: int | datetime
) -> list[ConsumerRecord[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        **connection_kwargs(settings.kafka, "rules-replay"),
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        topic = settings.topics.events
        partitions = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
        if not partitions:
            raise SystemExit(f"topic {topic} not found")
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        if isinstance(start, int):
            for tp in partitions:
                consumer.seek(tp, min(start, ends[tp]))
        else:
            found = await consumer.offsets_for_times(
                {tp: int(start.timestamp() * 1000) for tp in partitions}
            )
            for tp in partitions:
                consumer.seek(tp, found[tp].offset if found[tp] else ends[tp])
        records: list[ConsumerRecord[bytes, bytes]] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in partitions])

        while await behind():
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records += [
                    r for r in batch if r.offset < ends[TopicPartition(r.topic, r.partition)]
                ]
        return records
    finally:
        await consumer.stop()


Timed = tuple[datetime, Record]


def in_time_order(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[Timed]:
    """The records in the order a rehearsal takes them (event time), each with its time and
    numbered in that order (one partition, consecutive offsets).

    The state takes a record at or before the last offset it applied in the same partition for
    a redelivery and skips it. In the topic a record may be older than the one before it (an
    upstream event that arrived late; a journey's own ``journey.entered``, stamped with its
    timer's due time, which MongoDB keeps to the millisecond, a moment before the event that
    entered the run): taken in time order under its own offset, it would be skipped as seen."""
    timed = sorted(
        ((CanonicalEvent.from_json(r.value or b"").time, r) for r in records),
        key=lambda t: (t[0], t[1].partition, t[1].offset),
    )
    return [
        (at, StoredRecord(r.topic, 0, n, r.value, r.key, tuple(r.headers or ()), r.timestamp))
        for n, (at, r) in enumerate(timed)
    ]


async def rehearse(
    engine: RulesEngine,
    clock: list[datetime],
    timed: Sequence[Timed],
    until: datetime,
    on_result: Callable[[HandlerResult], None],
) -> None:
    """Run ``engine`` (in-memory stores; its clock reads ``clock[0]``) over ``timed`` (from
    :func:`in_time_order`) with the clock following the events: before each event the timers
    due by its time fire; at the end, those due by ``until``. ``on_result`` sees every result
    before its after-commit hooks run (which remove fired timers, as a commit does)."""
    partitions = set(range(1024))  # every partition the events topic may have

    async def done(result: HandlerResult) -> None:
        on_result(result)
        for hook in result.after_commit:
            outcome = hook()
            if outcome is not None:
                await outcome

    async def fire_until(moment: datetime) -> None:
        clock[0] = moment
        while True:  # a tick with due timers always carries the hook that removes them
            result = await engine.tick(partitions)
            if not result.after_commit:
                return
            await done(result)

    for moment, record in timed:
        if moment > until:
            break
        await fire_until(moment)
        clock[0] = moment
        await done(await engine.handle([record]))
    await fire_until(until)


async def replay(
    settings: RulesSettings, start: int | datetime, until: datetime, out: TextIO
) -> int:
    """Print the would-be actions; returns how many."""
    config = read_config(settings.config_file)
    clock = [datetime.min.replace(tzinfo=UTC)]
    engine = RulesEngine(
        load_rules(config, settings.enabled_rules()),
        InMemorySubjectStore(),
        InMemoryTimerStore(),
        events_topic=settings.topics.events,
        actions_topic=settings.topics.actions,
        config=config,
        clock=lambda: clock[0],
    )
    printed = 0

    def emit(result: HandlerResult) -> None:
        nonlocal printed
        for message in result.messages:
            if message.topic == settings.topics.actions:
                out.write(message.value.decode() + "\n")
                printed += 1

    timed = in_time_order(await read_history(settings, start))
    await rehearse(engine, clock, timed, until, emit)
    return printed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.rules replay", description=__doc__)
    parser.add_argument("--from", dest="start", required=True, help="offset or RFC 3339 time")
    parser.add_argument("--until", default=None, help="fire timers due by then (default: now)")
    parser.add_argument("--dry-run", action="store_true", help="required: never publishes")
    args = parser.parse_args(argv)
    if not args.dry_run:
        parser.error("only --dry-run is supported: replay never publishes")
    until = parse_start(args.until) if args.until else datetime.now(UTC)
    if not isinstance(until, datetime):
        parser.error("--until must be a time")
    count = asyncio.run(replay(RulesSettings(), parse_start(args.start), until, sys.stdout))
    sys.stderr.write(f"{count} actions would have been published\n")
    return 0
