"""The consumer loop isolates a record its handler cannot process, even when it is alone in
its batch: it is dead-lettered, never allowed to stop the loop."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from shared.kafka.consumer import ConsumerLoop
from shared.kafka.messages import HandlerResult, Record, StoredRecord


class Picky:
    """Fails on the record whose value is b"poison"; a transient error on b"later"."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    async def handle(self, records: Sequence[Record]) -> HandlerResult:
        for r in records:
            if r.value == b"poison":
                raise ValueError("cannot process this one")
            if r.value == b"later":
                raise ConnectionError("the store is away")
        self.seen += [r.value or b"" for r in records]
        return HandlerResult()


def loop(handler: Picky) -> ConsumerLoop:
    return ConsumerLoop(
        service="test",
        consumer_factory=lambda: Any,  # a stand-in consumer: _handle_isolating never reads it
        topics=["t"],
        handler=handler,
        group_id="g",
        dlq_topic="dlq",
    )


@pytest.mark.parametrize("batch", [[b"poison"], [b"ok-1", b"poison", b"ok-2"]])
async def test_a_record_the_handler_cannot_process_is_dead_lettered(batch: list[bytes]) -> None:
    handler = Picky()
    records: list[Record] = [StoredRecord("t", 0, n, value) for n, value in enumerate(batch)]
    result = await loop(handler)._handle_isolating(records)
    assert [(d.record.value, d.reason) for d in result.dead_letters] == [
        (b"poison", "handler_error")
    ]
    assert handler.seen == [v for v in batch if v != b"poison"]


async def test_a_transient_failure_is_raised_to_be_retried_not_dead_lettered() -> None:
    records: list[Record] = [StoredRecord("t", 0, 0, b"later")]
    with pytest.raises(ConnectionError):
        await loop(Picky())._handle_isolating(records)
