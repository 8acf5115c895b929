"""The ingest batch handler: decode → normalise → de-duplicate → canonical messages."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from services.ingest import metrics
from services.ingest.decode import decode_record
from services.ingest.dedup import Claim, DedupStore
from services.ingest.normalise import NormaliseContext, normalise
from services.ingest.reasons import Rejection
from shared.events.envelope import CanonicalEvent
from shared.kafka.messages import DeadLetter, HandlerResult, Record, canonical_message


@dataclass(frozen=True, slots=True)
class IngestConfig:
    events_topic: str
    max_message_bytes: int
    context: NormaliseContext


class IngestHandler:
    """:class:`~shared.kafka.consumer.BatchHandler` for the raw topics."""

    def __init__(self, config: IngestConfig, dedup: DedupStore) -> None:
        self._config = config
        self._dedup = dedup

    def _canonical(self, record: Record) -> tuple[str, CanonicalEvent | Rejection]:
        decoded = decode_record(
            record.value, record.headers, max_bytes=self._config.max_message_bytes
        )
        if isinstance(decoded, Rejection):
            return "unknown", decoded
        origin = f"{record.topic}/{record.partition}/{record.offset}"
        return decoded.form, normalise(decoded, self._config.context, origin=origin)

    async def handle(self, records: Sequence[Record]) -> HandlerResult:
        result = HandlerResult()
        outcomes: Counter[tuple[str, str]] = Counter()
        rejected: Counter[str] = Counter()
        candidates: dict[str, tuple[Record, CanonicalEvent, str]] = {}
        for record in records:
            form, event = self._canonical(record)
            if isinstance(event, Rejection):
                rejected[event.reason.value] += 1
                result.dead_letters.append(DeadLetter(record, event.reason.value, event.detail))
            elif event.dedup_key in candidates:  # repeated inside this batch
                outcomes[(form, "duplicate")] += 1
            else:
                candidates[event.dedup_key] = (record, event, form)
        claims = [
            Claim(key, f"{rec.topic}/{rec.partition}/{rec.offset}")
            for key, (rec, _, _) in candidates.items()
        ]
        won = await self._dedup.claim(claims)
        for key, (_, event, form) in candidates.items():
            if key in won:
                result.messages.append(canonical_message(self._config.events_topic, event))
                outcomes[(form, "published")] += 1
            else:
                outcomes[(form, "duplicate")] += 1

        def count() -> None:
            for (form, outcome), n in outcomes.items():
                metrics.EVENTS.labels("kafka", form, outcome).inc(n)
            for reason, n in rejected.items():
                metrics.REJECTED.labels("kafka", reason).inc(n)

        result.after_commit.append(count)
        return result
