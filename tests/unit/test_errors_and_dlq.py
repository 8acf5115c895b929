"""What is retried, and dead letters that always fit on the topic."""

from __future__ import annotations

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    ProducerFenced,
)
from pymongo.errors import (
    AutoReconnect,
    DuplicateKeyError,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from shared.errors import TransientError, is_transient
from shared.kafka.dlq import MAX_VALUE, dead_letter_message, dlq_headers
from shared.kafka.messages import DeadLetter, StoredRecord


@pytest.mark.parametrize(
    "error",
    [
        TransientError("x"),
        KafkaConnectionError(),
        KafkaTimeoutError(),
        NotLeaderForPartitionError(),
        AutoReconnect("down"),
        ServerSelectionTimeoutError("down"),
        TimeoutError(),
        ConnectionRefusedError(),
        OperationFailure("not authorized on upkeep", code=13),  # credentials being fixed
        OperationFailure("Authentication failed.", code=18),
        OperationFailure("stepped down", code=189),
        OperationFailure("retry me", code=1, details={"errorLabels": ["RetryableWriteError"]}),
    ],
)
def test_dependency_failures_are_transient(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        MessageSizeTooLargeError(),
        ProducerFenced(),
        DuplicateKeyError("dup"),
        OperationFailure("document too large", code=10334),  # the record's own fault
        OperationFailure("unknown operator: $foo", code=2),
        ValueError("bad record"),
        KeyError("x"),
    ],
)
def test_failures_that_retrying_cannot_cure_are_not_transient(error: BaseException) -> None:
    assert not is_transient(error)


def test_a_huge_dead_letter_is_truncated_and_says_so() -> None:
    record = StoredRecord("raw", 2, 41, b"x" * (MAX_VALUE + 10), b"k")
    message = dead_letter_message(
        DeadLetter(record, "oversized", "too big"), service="ingest", dlq_topic="dlq"
    )
    headers = dlq_headers(message.headers)
    assert len(message.value) == MAX_VALUE
    assert headers["truncated-from"] == str(MAX_VALUE + 10)
    assert (headers["reason"], headers["offset"], headers["partition"]) == ("oversized", "41", "2")


def test_a_normal_dead_letter_is_kept_whole() -> None:
    record = StoredRecord("raw", 0, 1, b"{oops", None)
    message = dead_letter_message(
        DeadLetter(record, "invalid_json", "bad"), service="ingest", dlq_topic="dlq"
    )
    assert message.value == b"{oops"
    assert "truncated-from" not in dlq_headers(message.headers)
