"""The journeys' part of the rules service: their store, the catalogue kept fresh from it, the
journey files applied at start-up, the API, and dry runs over the events topic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pymongo.asynchronous.database import AsyncDatabase

from services.rules.journeys.api import in_thread, journeys_router
from services.rules.journeys.catalog import Catalog
from services.rules.journeys.definition import Journey
from services.rules.journeys.dryrun import dry_run
from services.rules.journeys.files import apply_directory
from services.rules.journeys.runner import (
    CATALOG_REVISION,
    JOURNEYS,
    Journeys,
    preinit_journey_metrics,
)
from services.rules.journeys.store import JourneyStore, MongoJourneyStore, refresh
from services.rules.replay import read_history
from services.rules.sdk import Rule
from services.rules.settings import RulesSettings
from shared.apikeys import KeyRing
from shared.mongo import Document, retry_until_done

log = logging.getLogger(__name__)
FIRST_LOAD_TIMEOUT_S = 30.0  # start consuming without journeys rather than not at all


@dataclass
class JourneysPart:
    store: JourneyStore
    catalog: Catalog
    router: APIRouter
    settings: RulesSettings
    refresh_s: float
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        """Apply the journey files and read the catalogue once (so the first events already
        meet the journeys), then keep it fresh."""
        try:
            await asyncio.wait_for(retry_until_done(self._first_load), FIRST_LOAD_TIMEOUT_S)
        except TimeoutError:
            log.error("journeys not loaded at start-up: MongoDB unavailable; retrying")
        self._tasks.append(asyncio.create_task(self._keep_fresh(), name="journeys-refresh"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _first_load(self) -> None:
        if isinstance(self.store, MongoJourneyStore):
            await self.store.ensure_indexes()
        directory = self.settings.journeys_dir
        if directory is not None:
            by = f"file:{directory.name}"
            for applied in await apply_directory(
                self.store, directory, by, self.settings.template_dir
            ):
                found = applied.as_json()  # (``name`` is a LogRecord attribute: not as is)
                log.info(
                    "journey file applied", extra={f"journey_{k}": v for k, v in found.items()}
                )
        await self._refresh()

    async def _refresh(self) -> None:
        await refresh(self.store, self.catalog)
        CATALOG_REVISION.set_to_current_time()
        preinit_journey_metrics(self.catalog)
        running = sum(1 for p in self.catalog.current.values() if p.running)
        JOURNEYS.labels("enabled").set(running)
        JOURNEYS.labels("disabled").set(len(self.catalog.current) - running)

    async def _keep_fresh(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self._refresh()
            except Exception:  # MongoDB away: keep the last catalogue, try again
                log.exception("journey catalogue refresh failed")


def journeys_part(
    settings: RulesSettings, rules: Sequence[Rule], db: AsyncDatabase[Document]
) -> JourneysPart | None:
    """``None`` when the ``journeys`` rule is not enabled on this replica."""
    rule = next((r for r in rules if isinstance(r, Journeys)), None)
    if rule is None:
        return None
    store = MongoJourneyStore(db["journeys"], db["journey_versions"])
    topics = settings.topics

    async def rehearse(
        journey: Journey, version: int, since: datetime | None, until: datetime
    ) -> dict[str, Any]:
        records = await read_history(settings, 0)
        return await dry_run(
            journey,
            version,
            records,
            since=since,
            until=until,
            events_topic=topics.events,
            actions_topic=topics.actions,
            template_root=settings.template_dir,
        )

    router = journeys_router(
        store, rule.catalog, KeyRing(settings.api_keys), settings.template_dir, in_thread(rehearse)
    )
    return JourneysPart(store, rule.catalog, router, settings, rule.config.refresh_s)
