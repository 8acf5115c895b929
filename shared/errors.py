"""Which failures are worth retrying.

A *transient* failure is a dependency that is down or slow (Kafka, MongoDB, a network call): the
work is rolled back and tried again later, and nothing is dead-lettered. Anything else raised
while handling a record is that record's fault and sends it to the dead-letter topic.
"""

from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaError, MessageSizeTooLargeError, ProducerFenced
from pymongo.errors import (
    ConnectionFailure,
    ExecutionTimeout,
    OperationFailure,
    WaitQueueTimeoutError,
)


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


# MongoDB refusals that are about the server or our credentials, not the record: a password
# being rotated, a user not yet created, a node shutting down or stepping down. Dead-lettering
# records while they last would lose good data; retrying waits for the operator's fix.
TRANSIENT_MONGO_CODES = frozenset(
    {
        13,  # Unauthorized
        18,  # AuthenticationFailed
        91,  # ShutdownInProgress
        189,  # PrimarySteppedDown
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)

# Kafka errors that retrying cannot cure: the batch can never be published as it is, or another
# process took over our transactional id (a configuration error: fail loudly).
PERMANENT_KAFKA_ERRORS: tuple[type[BaseException], ...] = (MessageSizeTooLargeError, ProducerFenced)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, PERMANENT_KAFKA_ERRORS):
        return False
    if isinstance(exc, OperationFailure) and not isinstance(exc, ExecutionTimeout):
        return exc.code in TRANSIENT_MONGO_CODES or exc.has_error_label("RetryableWriteError")
    return isinstance(exc, TRANSIENT_TYPES)
