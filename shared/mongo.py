"""The MongoDB client (PyMongo's asyncio API) and a readiness probe."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from shared.settings import MongoSettings

Document = dict[str, Any]


def make_client(settings: MongoSettings, appname: str) -> AsyncMongoClient[Document]:
    """A lazily-connecting client; timestamps come back as aware UTC datetimes."""
    return AsyncMongoClient(
        settings.uri.get_secret_value(),
        appname=f"upkeep-{appname}",
        tz_aware=True,
        serverSelectionTimeoutMS=settings.server_selection_timeout_ms,
        connectTimeoutMS=settings.server_selection_timeout_ms,
        retryWrites=True,
    )


def database(
    client: AsyncMongoClient[Document], settings: MongoSettings
) -> AsyncDatabase[Document]:
    return client[settings.database]


async def ping(client: AsyncMongoClient[Document]) -> bool:
    await client.admin.command("ping")
    return True
