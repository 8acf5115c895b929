"""Which failures are worth retrying.

A *transient* failure is a dependency that is down or slow (Kafka, MongoDB, a network call): the
work is rolled back and tried again later, and nothing is dead-lettered. Anything else raised
while handling a record is that record's fault and sends it to the dead-letter topic.
"""

from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaError, MessageSizeTooLargeError, ProducerFenced
from pymongo.errors import ConnectionFailure, ExecutionTimeout, WaitQueueTimeoutError


class TransientError(Exception):
    """Raise to say "a dependency failed; retry this work later"."""


TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    TransientError,
    KafkaError,
    ConnectionFailure,  # includes AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError
    ExecutionTimeout,
    WaitQueueTimeoutError,
    TimeoutError,
    asyncio.TimeoutError,
    ConnectionError,
)


# Kafka errors that retrying cannot cure: the batch can never be published as it is, or another
# process took over our transactional id (a configuration error: fail loudly).
PERMANENT_KAFKA_ERRORS: tuple[type[BaseException], ...] = (MessageSizeTooLargeError, ProducerFenced)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, PERMANENT_KAFKA_ERRORS):
        return False
    return isinstance(exc, TRANSIENT_TYPES)
