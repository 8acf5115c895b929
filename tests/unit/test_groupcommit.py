"""Group commit: concurrent writes share bulk writes, each caller sees its own write's fate."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

import pytest
from pymongo import UpdateOne
from pymongo.errors import AutoReconnect, BulkWriteError

from shared.groupcommit import GroupCommit


class SlowCollection:
    """Records each bulk write; each takes until the test releases it (or fails it)."""

    def __init__(self) -> None:
        self.bulks: list[list[str]] = []
        self.release = asyncio.Event()
        self.fail_with: BaseException | None = None
        self.values: list[Any] = []

    async def bulk_write(self, ops: list[UpdateOne], ordered: bool) -> None:
        assert ordered, "arrival order must be kept"
        self.bulks.append([op._filter["_id"] for op in ops])
        # op() updates with a document, never a pipeline (UpdateOne's _doc may be either)
        self.values += [cast(Mapping[str, Any], op._doc)["$set"] for op in ops]
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with


def op(key: str) -> UpdateOne:
    return UpdateOne({"_id": key}, {"$set": {"state": "sent"}})


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_lone_write_goes_at_once() -> None:
    collection = SlowCollection()
    collection.release.set()
    commit = GroupCommit(collection)  # type: ignore[arg-type]
    await commit.write(op("a"))
    assert collection.bulks == [["a"]]


async def test_writes_arriving_during_a_flush_share_the_next_bulk_write() -> None:
    collection = SlowCollection()
    commit = GroupCommit(collection)  # type: ignore[arg-type]
    first = asyncio.create_task(commit.write(op("a")))
    await settle()
    rest = [asyncio.create_task(commit.write(op(k))) for k in "bcdef"]
    await settle()
    assert collection.bulks == [["a"]]  # b..f wait for the flush in flight
    assert not any(t.done() for t in [first, *rest])
    collection.release.set()
    await asyncio.gather(first, *rest)
    assert collection.bulks == [["a"], ["b", "c", "d", "e", "f"]]
    assert commit.round_trips == 2


async def test_a_batch_is_bounded_and_the_rest_follows() -> None:
    collection = SlowCollection()
    commit = GroupCommit(collection, max_batch=2)  # type: ignore[arg-type]
    first = asyncio.create_task(commit.write(op("a")))
    await settle()
    rest = [asyncio.create_task(commit.write(op(k))) for k in "bcde"]
    await settle()
    collection.release.set()
    await asyncio.gather(first, *rest)
    assert collection.bulks == [["a"], ["b", "c"], ["d", "e"]]


async def test_a_failed_bulk_write_fails_every_write_it_carried_and_only_those() -> None:
    collection = SlowCollection()
    commit = GroupCommit(collection)  # type: ignore[arg-type]
    first = asyncio.create_task(commit.write(op("a")))
    await settle()
    carried = [asyncio.create_task(commit.write(op(k))) for k in "bc"]
    await settle()
    collection.fail_with = None
    collection.release.set()
    await first  # "a" went alone and succeeded
    collection.release.clear()
    await settle()
    collection.fail_with = BulkWriteError({"writeErrors": [], "nInserted": 0})
    collection.release.set()
    results = await asyncio.gather(*carried, return_exceptions=True)
    assert [type(r) for r in results] == [BulkWriteError, BulkWriteError]
    collection.fail_with = None
    await commit.write(op("d"))  # the next write is not affected
    assert collection.bulks[-1] == ["d"]


async def test_a_cancelled_waiter_does_not_hold_up_the_others() -> None:
    collection = SlowCollection()
    commit = GroupCommit(collection)  # type: ignore[arg-type]
    first = asyncio.create_task(commit.write(op("a")))
    await settle()
    second, third = (asyncio.create_task(commit.write(op(k))) for k in "bc")
    await settle()
    second.cancel()  # while it waits for the flush in flight
    with pytest.raises(asyncio.CancelledError):
        await second
    collection.release.set()
    await asyncio.wait_for(asyncio.gather(first, third), timeout=1)
    # like an update_one cancelled before it was sent, the cancelled caller's write is dropped
    assert collection.bulks == [["a"], ["c"]]


async def test_one_refused_write_fails_alone_and_those_after_it_are_written_again() -> None:
    class RefusesC(SlowCollection):
        async def bulk_write(self, ops: list[UpdateOne], ordered: bool) -> None:
            keys = [o._filter["_id"] for o in ops]
            self.bulks.append(keys)
            await self.release.wait()
            if "c" in keys:  # ordered: what came before "c" was applied, the rest not tried
                index = keys.index("c")
                raise BulkWriteError({"writeErrors": [{"index": index, "code": 121}]})

    collection = RefusesC()
    commit = GroupCommit(collection)  # type: ignore[arg-type]
    first = asyncio.create_task(commit.write(op("a")))
    await settle()
    rest = [asyncio.create_task(commit.write(op(k))) for k in "bcd"]
    await settle()
    collection.release.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert [type(r).__name__ for r in results] == [
        "NoneType",
        "NoneType",
        "BulkWriteError",
        "NoneType",
    ]
    assert collection.bulks == [["a"], ["b", "c", "d"], ["d"]]


async def test_writes_of_one_document_apply_in_arrival_order() -> None:
    collection = SlowCollection()
    commit = GroupCommit(collection)  # type: ignore[arg-type]
    writes = [
        asyncio.create_task(commit.write(UpdateOne({"_id": "k"}, {"$set": {"n": n}})))
        for n in range(4)
    ]
    await settle()
    collection.release.set()
    await asyncio.gather(*writes)
    assert collection.bulks == [["k"], ["k", "k", "k"]]
    assert collection.values == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}]


async def test_an_interrupted_bulk_write_leaves_the_others_it_carried_a_transient_error() -> None:
    collection = SlowCollection()
    commit = GroupCommit(collection)  # type: ignore[arg-type]
    first = asyncio.create_task(commit.write(op("a")))
    await settle()
    leader, carried = (asyncio.create_task(commit.write(op(k))) for k in "bc")
    await settle()
    collection.release.set()
    await first
    collection.release.clear()
    await settle()  # "leader" now writes ["b", "c"]
    assert collection.bulks[-1] == ["b", "c"]
    collection.fail_with = asyncio.CancelledError()
    collection.release.set()
    with pytest.raises(asyncio.CancelledError):
        await leader
    with pytest.raises(AutoReconnect):  # transient: the caller's tick is retried
        await carried


async def test_a_carried_write_rides_with_the_next_write_and_waits_for_nothing() -> None:
    collection = SlowCollection()
    collection.release.set()
    commit = GroupCommit(collection)  # type: ignore[arg-type]
    carried = commit.carry(op("flag"))
    await settle()
    assert collection.bulks == []  # nothing is sent for it alone
    await commit.write(op("a"))
    assert collection.bulks == [["flag", "a"]]  # in arrival order, one round trip
    assert carried.done()
    assert carried.exception() is None


async def test_flush_writes_what_is_carried_and_is_free_when_nothing_is() -> None:
    collection = SlowCollection()
    collection.release.set()
    commit = GroupCommit(collection)  # type: ignore[arg-type]
    await commit.flush()
    assert collection.bulks == []
    carried = commit.carry(op("flag"))
    await commit.flush()
    assert collection.bulks == [["flag"]]
    assert carried.done()


async def test_a_carried_write_that_fails_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    collection = SlowCollection()
    collection.fail_with = AutoReconnect("gone")
    collection.release.set()
    commit = GroupCommit(collection)  # type: ignore[arg-type]
    carried = commit.carry(op("flag"))
    await commit.flush()  # does not raise
    assert isinstance(carried.exception(), AutoReconnect)
    await settle()  # done callbacks run on the loop's next turns
    assert "a carried write failed" in caplog.text
