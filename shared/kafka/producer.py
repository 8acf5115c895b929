"""A publisher for request-driven code (HTTP handlers) that must not die when Kafka is away.

Consumer loops publish through their own transactional producer; this wrapper is for everything
else. It starts in the background and keeps retrying, so a service comes up (and reports not
ready) while Kafka is unreachable; :meth:`Publisher.publish` raises :class:`TransientError`
until then, which an HTTP handler turns into 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaProducer
from tenacity import AsyncRetrying, before_sleep_log, retry_if_exception, wait_random_exponential

from shared import metrics
from shared.errors import TransientError, is_transient
from shared.kafka.messages import Outgoing

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, factory: Callable[[], AIOKafkaProducer]) -> None:
        self._factory = factory
        self._producer: AIOKafkaProducer | None = None
        self._starter: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self._producer is not None

    def start_in_background(self) -> None:
        self._starter = asyncio.create_task(self._start(), name="publisher-start")

    async def _start(self) -> None:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=wait_random_exponential(multiplier=0.5, max=15),
            before_sleep=before_sleep_log(log, logging.WARNING),
        ):
            with attempt:
                producer = self._factory()
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Publish and wait until every message is acknowledged by all in-sync replicas."""
        producer = self._producer
        if producer is None:
            raise TransientError("Kafka producer is not connected yet")
        futures = [
            await producer.send(m.topic, m.value, key=m.key, headers=list(m.headers))
            for m in messages
        ]
        await asyncio.gather(*futures)
        for m in messages:
            metrics.PRODUCED.labels(m.topic).inc()

    async def probe(self) -> bool:
        """Readiness: connected and able to fetch cluster metadata."""
        if self._producer is None:
            return False
        await self._producer.client.fetch_all_metadata()
        return True

    async def close(self) -> None:
        if self._starter is not None:
            self._starter.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._starter
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
