"""Builds aiokafka clients from :class:`~shared.settings.KafkaSettings`."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from shared.settings import KafkaSettings


def connection_kwargs(settings: KafkaSettings, role: str) -> dict[str, Any]:
    """Bootstrap, client id and security options common to producers, consumers and admins."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": f"{settings.client_id_prefix}-{role}",
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = create_ssl_context(
            cafile=settings.ssl_cafile,
            certfile=settings.ssl_certfile,
            keyfile=settings.ssl_keyfile,
        )
    if settings.security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.sasl_mechanism or "PLAIN"
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    return kwargs


Client = TypeVar("Client", AIOKafkaProducer, AIOKafkaConsumer)


def back_off_failed_metadata(kafka_client: Client) -> Client:
    """Wait ``retry_backoff_ms`` after a metadata refresh that reached no broker.

    aiokafka 0.14 refreshes metadata in one background task and wakes whoever forced the refresh
    when it ends. A producer holding a batch for a partition whose leader is unknown forces it
    again at once, and a refused connection ends it at once: during a broker outage that loop
    spun a core and logged ~3,400 errors a second (aio-libs/aiokafka#1155 is the fetcher's twin).
    Delaying the failed result paces every such loop to the client's own retry backoff.
    """
    client: AIOKafkaClient = (
        kafka_client.client if isinstance(kafka_client, AIOKafkaProducer) else kafka_client._client
    )
    update = client._metadata_update

    async def update_or_back_off(cluster_metadata: Any, topics: Any) -> bool:
        if await update(cluster_metadata, topics):
            return True
        await asyncio.sleep(client._retry_backoff)
        return False

    client._metadata_update = update_or_back_off
    return kafka_client


def make_producer(
    settings: KafkaSettings, role: str, *, transactional_id: str | None = None
) -> AIOKafkaProducer:
    """An idempotent producer (acks=all); transactional when ``transactional_id`` is given."""
    producer = AIOKafkaProducer(
        **connection_kwargs(settings, role),
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
        max_request_size=2 * 1024 * 1024,
        transactional_id=transactional_id,
        transaction_timeout_ms=30_000,
    )
    return back_off_failed_metadata(producer)


def make_consumer(
    settings: KafkaSettings, role: str, *, group_id: str, max_records: int
) -> AIOKafkaConsumer:
    """A group consumer with manual commits that only reads committed transactions."""
    consumer = AIOKafkaConsumer(
        **connection_kwargs(settings, role),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=max_records,
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=2 * 1024 * 1024,
    )
    return back_off_failed_metadata(consumer)


def make_admin(settings: KafkaSettings, role: str) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**connection_kwargs(settings, role))
