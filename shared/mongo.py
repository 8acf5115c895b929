"""The MongoDB client (PyMongo's asyncio API) and a readiness probe."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase
from tenacity import AsyncRetrying, retry_if_exception, wait_random_exponential

from shared.errors import is_transient
from shared.settings import MongoSettings

Document = dict[str, Any]

REQUESTS = Counter(
    "upkeep_mongo_requests_total",
    "Commands sent to MongoDB by this process, by command name (find, insert, update, "
    "delete, getMore, ...): the round trips the hot paths cost.",
    ["command"],
)


class RequestCounter(monitoring.CommandListener):
    """Counts every command the driver starts (its own ``hello`` heartbeats are not commands
    of the application and are not counted)."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        REQUESTS.labels(event.command_name).inc()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def make_client(settings: MongoSettings, appname: str) -> AsyncMongoClient[Document]:
    """A lazily-connecting client; timestamps come back as aware UTC datetimes."""
    return AsyncMongoClient(
        settings.uri.get_secret_value(),
        appname=f"upkeep-{appname}",
        tz_aware=True,
        serverSelectionTimeoutMS=settings.server_selection_timeout_ms,
        connectTimeoutMS=settings.server_selection_timeout_ms,
        retryWrites=True,
        event_listeners=[RequestCounter()],
    )


def database(
    client: AsyncMongoClient[Document], settings: MongoSettings
) -> AsyncDatabase[Document]:
    return client[settings.database]


async def can_use(db: AsyncDatabase[Document]) -> bool:
    """Readiness: the service may read its own database, not merely reach the server.

    ``ping`` needs no login, so a service without credentials (or with a user that lacks
    ``readWrite`` on this database) would look ready while every write is refused. Listing
    collections needs both; the filter keeps the answer empty and cheap. It cannot tell
    ``read`` from ``readWrite`` (both may list): a read-only user looks ready, and its writes
    are refused as transient errors, which stall consumption and the readiness of the loop.
    """
    await db.command("listCollections", nameOnly=True, filter={"name": "__readiness"})
    return True


async def retry_until_done(step: Callable[[], Awaitable[None]]) -> None:
    """Run ``step`` (index creation, typically) until MongoDB lets it succeed. Meant to run as a
    background task, so a service starts — and reports not ready — while MongoDB comes up."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(is_transient), wait=wait_random_exponential(max=15)
    ):
        with attempt:
            await step()
