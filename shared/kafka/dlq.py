"""The dead-letter format on ``upkeep.dlq.v1``.

The value and key are the original bytes, untouched, so a fixed consumer can replay them. The
original headers are kept, and these are added:

=========================== ==========================================================
``upkeep-dlq-service``      service that gave up on the message (``ingest``)
``upkeep-dlq-reason``       short, stable reason code (``invalid_json``, ``bad_timezone``)
``upkeep-dlq-detail``       human-readable explanation, without personal data
``upkeep-dlq-topic``        source topic
``upkeep-dlq-partition``    source partition
``upkeep-dlq-offset``       source offset
``upkeep-dlq-timestamp``    when it was dead-lettered, RFC 3339 UTC
``upkeep-dlq-truncated-from`` original size, when the value was cut to 512 KiB
=========================== ==========================================================
"""

from __future__ import annotations

from datetime import UTC, datetime

from shared.kafka.messages import DeadLetter, Outgoing
from shared.logging import redact

HEADER_PREFIX = "upkeep-dlq-"
MAX_DETAIL = 1_000
# below the broker's default message.max.bytes (1 MiB) with room for headers: a dead letter must
# always be publishable, or the partition it came from would be stuck
MAX_VALUE = 512 * 1024


def dead_letter_message(dead: DeadLetter, *, service: str, dlq_topic: str) -> Outgoing:
    record = dead.record
    kept = tuple(
        (name, value or b"")
        for name, value in (record.headers or ())
        if not name.startswith(HEADER_PREFIX)
    )
    added: list[tuple[str, str]] = [
        ("service", service),
        ("reason", dead.reason),
        ("detail", redact(dead.detail)[:MAX_DETAIL]),
        ("topic", record.topic),
        ("partition", str(record.partition)),
        ("offset", str(record.offset)),
        ("timestamp", datetime.now(UTC).isoformat().replace("+00:00", "Z")),
    ]
    value = record.value or b""
    if len(value) > MAX_VALUE:
        added.append(("truncated-from", str(len(value))))
        value = value[:MAX_VALUE]
    headers = kept + tuple((HEADER_PREFIX + name, text.encode()) for name, text in added)
    return Outgoing(dlq_topic, value, record.key, headers)


def dlq_headers(headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...]) -> dict[str, str]:
    """The ``upkeep-dlq-*`` headers of a dead-letter record, without the prefix (for tools)."""
    return {
        name.removeprefix(HEADER_PREFIX): value.decode("utf-8", "replace")
        for name, value in headers
        if name.startswith(HEADER_PREFIX)
    }
