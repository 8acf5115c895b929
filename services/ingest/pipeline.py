"""The ingest batch handler: decode → normalise → de-duplicate → canonical messages."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from services.ingest import metrics
from services.ingest.decode import decode_record
from services.ingest.dedup import Claim, DedupStore
from services.ingest.normalise import NormaliseContext, normalise
from services.ingest.reasons import Reason, Rejection
from services.ingest.sources import MappedSources, map_record
from shared.events.envelope import CanonicalEvent
from shared.kafka.messages import DeadLetter, HandlerResult, Record, canonical_message


@dataclass(frozen=True, slots=True)
class IngestConfig:
    events_topic: str
    max_message_bytes: int
    context: NormaliseContext


class IngestHandler:
    """:class:`~shared.kafka.consumer.BatchHandler` for the raw topics, and for the topics of
    mapped sources (``sources``): a record there becomes what its mapping says, zero, one or
    more events, each normalised like any other."""

    def __init__(
        self, config: IngestConfig, dedup: DedupStore, sources: MappedSources | None = None
    ) -> None:
        self._config = config
        self._dedup = dedup
        self._sources = sources

    def _canonical(self, record: Record) -> list[tuple[str, CanonicalEvent | Rejection]]:
        origin = f"{record.topic}/{record.partition}/{record.offset}"
        mapping = self._sources.for_topic(record.topic) if self._sources else None
        limit = self._config.max_message_bytes
        if mapping is not None and record.value is not None and len(record.value) > limit:
            detail = f"{len(record.value)} bytes exceeds the {limit} limit"
            return [("mapped", Rejection(Reason.OVERSIZED, detail))]
        if mapping is not None:
            mapped = map_record(mapping, record.value, record.key, record.topic)
            if isinstance(mapped, Rejection):
                return [("mapped", mapped)]
            context = self._config.context
            if mapping.spec.timezone:
                context = replace(context, default_timezone=mapping.spec.timezone)
            return [("mapped", normalise(raw, context, origin=origin)) for raw in mapped.events]
        decoded = decode_record(
            record.value, record.headers, max_bytes=self._config.max_message_bytes
        )
        if isinstance(decoded, Rejection):
            return [("unknown", decoded)]
        return [(decoded.form, normalise(decoded, self._config.context, origin=origin))]

    async def handle(self, records: Sequence[Record]) -> HandlerResult:
        result = HandlerResult()
        outcomes: Counter[tuple[str, str]] = Counter()
        rejected: Counter[str] = Counter()
        candidates: dict[str, tuple[Record, CanonicalEvent, str]] = {}
        for record in records:
            found = self._canonical(record)
            refused = next((e for _, e in found if isinstance(e, Rejection)), None)
            if refused is not None:  # all of a record's events, or none of them
                rejected[refused.reason.value] += 1
                result.dead_letters.append(DeadLetter(record, refused.reason.value, refused.detail))
                continue
            for form, event in found:
                assert isinstance(event, CanonicalEvent)
                if event.dedup_key in candidates:  # repeated inside this batch
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
