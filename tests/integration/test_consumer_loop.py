"""The shared consumer loop's promises, through the real broker and MongoDB-wire server."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from pymongo.errors import AutoReconnect

from services.ingest.dedup import Claim, DedupStore, InMemoryDedupStore, MongoDedupStore
from services.ingest.normalise import NormaliseContext
from services.ingest.pipeline import IngestConfig, IngestHandler
from shared import metrics
from shared.kafka.clients import make_consumer, make_producer
from shared.kafka.consumer import ConsumerLoop
from shared.kafka.messages import HandlerResult, Record
from shared.kafka.progress import MongoProgressStore
from shared.mongo import make_client
from shared.settings import KafkaSettings, MongoSettings, TopicSettings
from tests.integration.ingest_fixtures import wait_assigned
from tests.kafka_helpers import header, ids_of, produce, read_topic
from tests.waiting import eventually

pytestmark = pytest.mark.integration


def event(n: int) -> dict[str, object]:
    return {
        "type": "customer.interaction",
        "id": f"e-{n}",
        "interaction_id": f"I-{n}",
        "customer_id": f"C-{n % 37}",
        "kind": "visit",
        "occurred_at": "2026-11-22T09:00:00+01:00",
    }


class FlakyStore(DedupStore):
    """A real store whose first ``failures`` calls fail as if MongoDB were unreachable."""

    def __init__(self, inner: DedupStore, failures: int) -> None:
        self.inner, self.failures, self.calls = inner, failures, 0

    async def claim(self, claims: Sequence[Claim]) -> set[str]:
        self.calls += 1
        if self.calls <= self.failures:
            raise AutoReconnect("connection refused (simulated)")
        return await self.inner.claim(claims)


class Exploding:
    """Wraps a handler; any record whose value mentions 'boom' makes it raise."""

    def __init__(self, inner: IngestHandler) -> None:
        self.inner = inner

    async def handle(self, records: Sequence[Record]) -> HandlerResult:
        if any(b"boom" in (r.value or b"") for r in records):
            raise ValueError("cannot handle this record")
        return await self.inner.handle(records)


def make_loop(
    kafka: KafkaSettings,
    topics: TopicSettings,
    handler: object,
    group: str,
    progress: MongoProgressStore | None = None,
    ticker: object = None,
    tick_interval_s: float = 1.0,
) -> ConsumerLoop:
    return ConsumerLoop(
        service="ingest",
        consumer_factory=lambda: make_consumer(kafka, "test", group_id=group, max_records=100),
        topics=[topics.raw_customer],
        handler=handler,  # type: ignore[arg-type]
        group_id=group,
        dlq_topic=topics.dlq,
        producer_factory=lambda: make_producer(kafka, "test", transactional_id=f"tx-{group}"),
        transactional=True,
        progress=progress,
        batch_timeout_ms=50,
        max_records=100,
        ticker=ticker,  # type: ignore[arg-type]
        tick_interval_s=tick_interval_s,
    )


def ingest_handler(topics: TopicSettings, store: DedupStore) -> IngestHandler:
    return IngestHandler(IngestConfig(topics.events, 65536, NormaliseContext()), store)


async def mongo_store(mongo: MongoSettings) -> MongoDedupStore:
    client = make_client(mongo, "test")
    store = MongoDedupStore(client[f"loop_{uuid.uuid4().hex[:8]}"]["dedup"], 1)
    await store.ensure_indexes()
    return store


async def test_a_failing_dependency_is_retried_and_nothing_is_dead_lettered(
    kafka_settings: KafkaSettings, mongo_settings: MongoSettings, topics: TopicSettings
) -> None:
    store = FlakyStore(await mongo_store(mongo_settings), failures=3)
    loop = make_loop(kafka_settings, topics, ingest_handler(topics, store), "g-flaky")
    retries_before = metrics.BATCH_RETRIES._value.get()
    task = asyncio.create_task(loop.run())
    await wait_assigned(loop)
    await produce(kafka_settings, topics.raw_customer, [event(n) for n in range(50)])
    published = await read_topic(kafka_settings, topics.events, expect=50, settle=2)
    loop.stop()
    await task
    dead = await read_topic(kafka_settings, topics.dlq, expect=0, timeout=30, settle=0.5)

    assert sorted(ids_of(published)) == sorted(f"e-{n}" for n in range(50))
    assert dead == []
    assert store.calls > 3
    assert metrics.BATCH_RETRIES._value.get() - retries_before >= 3


async def test_a_record_that_breaks_the_handler_is_isolated_and_dead_lettered(
    kafka_settings: KafkaSettings, mongo_settings: MongoSettings, topics: TopicSettings
) -> None:
    handler = Exploding(ingest_handler(topics, await mongo_store(mongo_settings)))
    loop = make_loop(kafka_settings, topics, handler, "g-boom")
    task = asyncio.create_task(loop.run())
    await wait_assigned(loop)
    stream = [event(n) for n in range(20)]
    stream[7] = {**stream[7], "attributes": {"note": "boom"}}
    await produce(kafka_settings, topics.raw_customer, stream, key=b"one-partition")
    published = await read_topic(kafka_settings, topics.events, expect=19)
    dead = await read_topic(kafka_settings, topics.dlq, expect=1)
    loop.stop()
    await task

    assert sorted(ids_of(published)) == sorted(f"e-{n}" for n in range(20) if n != 7)
    assert len(dead) == 1
    assert header(dead[0], "upkeep-dlq-reason") == "handler_error"
    assert "ValueError" in (header(dead[0], "upkeep-dlq-detail") or "")
    assert orjson.loads(dead[0].value)["id"] == "e-7"


async def test_stopping_mid_stream_commits_and_a_new_consumer_resumes_exactly(
    kafka_settings: KafkaSettings, mongo_settings: MongoSettings, topics: TopicSettings
) -> None:
    store = await mongo_store(mongo_settings)
    total = 3000
    first = make_loop(kafka_settings, topics, ingest_handler(topics, store), "g-resume")
    task = asyncio.create_task(first.run())
    await wait_assigned(first)
    await produce(kafka_settings, topics.raw_customer, [event(n) for n in range(total)])
    # let it commit a batch (of at most 100 records), then stop in the middle
    consumed = metrics.MESSAGES_CONSUMED.labels(topics.raw_customer, "ok")
    await eventually(lambda: consumed._value.get() > 0, what="no batch was committed")
    first.stop()
    await task
    partial = await read_topic(kafka_settings, topics.events, expect=1, timeout=30, settle=0.5)

    second = make_loop(kafka_settings, topics, ingest_handler(topics, store), "g-resume")
    task = asyncio.create_task(second.run())
    everything = await read_topic(kafka_settings, topics.events, expect=total, settle=2)
    second.stop()
    await task

    ids = ids_of(everything)
    assert 0 < len(partial) < total, "the first consumer should have stopped mid-stream"
    assert len(ids) == total
    assert set(ids) == {f"e-{n}" for n in range(total)}


async def test_mongo_claims_tell_redeliveries_from_duplicates(
    mongo_settings: MongoSettings,
) -> None:
    store = await mongo_store(mongo_settings)
    assert await store.claim([Claim("a", "t/0/1"), Claim("b", "t/0/2")]) == {"a", "b"}
    # the same records again (a rolled-back batch) may be published again
    assert await store.claim([Claim("a", "t/0/1"), Claim("b", "t/0/2")]) == {"a", "b"}
    # the same identities from other records are duplicates; new ones still win
    assert await store.claim([Claim("a", "t/1/9"), Claim("c", "t/1/10")]) == {"c"}
    assert await store.claim([]) == set()


async def test_a_record_reread_after_its_batch_committed_is_not_republished(
    mongo_settings: MongoSettings,
) -> None:
    client = make_client(mongo_settings, "test")
    db = client[f"loop_{uuid.uuid4().hex[:8]}"]
    progress = MongoProgressStore(db["progress"])
    store = MongoDedupStore(db["dedup"], 1, progress=progress, group="g")
    assert await store.claim([Claim("a", "t/0/5"), Claim("b", "t/1/7")]) == {"a", "b"}
    # the batch holding t/0/5 committed (next offset 6); t/1/7's batch did not
    await progress.save("g", {TopicPartition("t", 0): 6})
    assert await store.claim([Claim("a", "t/0/5"), Claim("b", "t/1/7")]) == {"b"}
    await progress.save("g", {TopicPartition("t", 0): 3})  # never moves backwards
    assert await progress.load("g", [TopicPartition("t", 0)]) == {TopicPartition("t", 0): 6}


async def test_a_new_owner_never_restarts_behind_committed_work(
    kafka_settings: KafkaSettings, mongo_settings: MongoSettings, topics: TopicSettings
) -> None:
    """What the rebalance race does — a new owner reading a stale committed offset — is
    reproduced by committing an old offset behind the loop's back."""
    client = make_client(mongo_settings, "test")
    db = client[f"loop_{uuid.uuid4().hex[:8]}"]
    progress = MongoProgressStore(db["progress"])
    # a store that forgets claims, so only the progress guard can prevent republishing
    forgetful = ingest_handler(topics, await mongo_store(mongo_settings))

    def loop() -> ConsumerLoop:
        return make_loop(kafka_settings, topics, forgetful, "g-stale", progress)

    first = loop()
    task = asyncio.create_task(first.run())
    await wait_assigned(first)
    await produce(kafka_settings, topics.raw_customer, [event(n) for n in range(100)], key=b"k")
    await read_topic(kafka_settings, topics.events, expect=100, settle=0.5)
    first.stop()
    await task

    stale = AIOKafkaConsumer(
        bootstrap_servers=kafka_settings.bootstrap_servers,
        group_id="g-stale",
        enable_auto_commit=False,
    )
    await stale.start()
    partition = next(iter(await read_partitions(kafka_settings, topics.raw_customer)))
    behind = TopicPartition(topics.raw_customer, partition)
    stale.assign([behind])
    await stale.commit({behind: 10})
    await stale.stop()

    forgetful._dedup = InMemoryDedupStore()  # claims lost: every record would be "new"
    second = loop()
    task = asyncio.create_task(second.run())
    await wait_assigned(second)
    await produce(
        kafka_settings, topics.raw_customer, [event(n) for n in range(100, 110)], key=b"k"
    )
    published = await read_topic(kafka_settings, topics.events, expect=110, settle=2)
    second.stop()
    await task

    ids = ids_of(published)
    assert len(ids) == len(set(ids)) == 110


async def read_partitions(kafka: KafkaSettings, topic: str) -> set[int]:
    records = await read_topic(kafka, topic, expect=1, settle=0.1)
    return {r.partition for r in records}


class DueNow:
    """A handler and ticker: a record saying "due now" asks for a tick; the first ``more``
    ticks say they stopped at their limit. Each tick notes how many records had been handled
    before it, so the order of ticks and batches shows in ``ticks`` whatever the timing."""

    def __init__(self, more: int = 0, tick_topic: str = "") -> None:
        self.tick_topic = tick_topic
        self.owned: list[set[int]] = []  # the partitions each tick was given
        self.ticks: list[int] = []
        self.handled = 0
        self.failed_clean_ups = 0
        self.more = more
        self.clean_up_fails = False

    async def handle(self, records: Sequence[Record]) -> HandlerResult:
        self.handled += len(records)
        return HandlerResult(tick_soon=any(b"due now" in (r.value or b"") for r in records))

    async def tick(self, partitions: set[int]) -> HandlerResult:
        self.owned.append(partitions)
        self.ticks.append(self.handled)
        result = HandlerResult(tick_soon=len(self.ticks) <= self.more)
        if self.clean_up_fails:  # like rules' removal of fired timers failing after the commit
            result.after_commit.append(self.fail)
        return result

    async def fail(self) -> None:
        self.failed_clean_ups += 1
        raise AutoReconnect("the clean-up could not reach MongoDB (simulated)")

    def revoked(self, partitions: set[int]) -> None:
        pass


async def test_work_due_now_is_ticked_at_once_not_at_the_next_interval(
    kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    group = f"g-{uuid.uuid4().hex[:6]}"
    due = DueNow(more=3, tick_topic=topics.raw_customer)
    # an hour between ticks: only the first tick and requests make it tick
    loop = make_loop(kafka_settings, topics, due, group, ticker=due, tick_interval_s=3600)
    task = asyncio.create_task(loop.run())

    async def send(note: str, handled: int) -> None:
        """One record, in a batch of its own: handled as record number ``handled``."""
        await produce(kafka_settings, topics.raw_customer, [{"note": note}])
        await eventually(lambda: due.handled >= handled, what=f"{note!r} was not handled")

    try:
        await wait_assigned(loop)
        # the first tick, then 3 more: each stopped at its limit (a 5th would come before the
        # next record is handled, and show in the list as a tick after 0 records)
        await eventually(
            lambda: len(due.ticks) >= 4,
            what=lambda: (
                f"ticks: {due.ticks}; the host's monotonic clock (time since boot) is "
                f"at {time.monotonic():.0f} s, the tick interval {loop._tick_interval_s:.0f} s"
            ),
        )
        await send("later", 1)  # nothing due now: the interval holds (no tick after 1 record)
        await send("due now", 2)
        await eventually(lambda: len(due.ticks) >= 5, what=lambda: f"ticks: {due.ticks}")
        assert due.ticks == [0, 0, 0, 0, 2], "a tick should follow the batch that made work due"
        # a tick is given the numbers of its topic's partitions this consumer owns
        assigned = loop._consumer.assignment()
        assert due.owned[-1] == {tp.partition for tp in assigned} != set()
        # a tick at its limit whose clean-up failed would redo the same work: no early tick
        due.more, due.clean_up_fails = 100, True
        await send("due now", 3)
        await eventually(lambda: due.failed_clean_ups >= 1, what=lambda: f"ticks: {due.ticks}")
        # an early tick would run in the loop's next round, before the round that handles the
        # second of two later records
        await send("later", 4)
        await send("later", 5)
        assert due.ticks == [0, 0, 0, 0, 2, 3]
    finally:
        loop.stop()
        await task
