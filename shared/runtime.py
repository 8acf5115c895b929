"""Runs one service process: its HTTP app and its consumer loops, until SIGTERM or SIGINT.

A service describes itself as an async context manager (``build(settings)``) that opens its
resources and yields a :class:`Service`; this module runs it and shuts it down in order:

1. a signal arrives → every consumer loop finishes and commits its batch in flight;
2. the HTTP server stops accepting and drains;
3. the context manager closes the service's resources (producers, MongoDB client).

If a consumer loop or the server dies on its own, the process exits with status 1 so its
supervisor (Compose restart policy, ``make up`` runner) restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TypeVar

import uvicorn
from fastapi import FastAPI

from shared.kafka.consumer import ConsumerLoop
from shared.logging import configure_logging
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)
S = TypeVar("S", bound=ServiceSettings)


@dataclass
class Service:
    app: FastAPI
    loops: Sequence[ConsumerLoop] = field(default_factory=list)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: :func:`run_service` owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_service(
    settings: S, build: Callable[[S], AbstractAsyncContextManager[Service]]
) -> int:
    """Run until a signal; returns the process exit status."""
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, stop.set)
    status = 0
    async with build(settings) as service:
        server = _Server(
            uvicorn.Config(
                service.app,
                host=settings.http_host,
                port=settings.http_port,
                log_config=None,
                access_log=False,
                lifespan="on",
            )
        )
        tasks = {
            asyncio.create_task(loop.run(), name=f"loop-{i}")
            for i, loop in enumerate(service.loops)
        }
        server_task = asyncio.create_task(server.serve(), name="http")
        stopper = asyncio.create_task(stop.wait(), name="signal")
        done, _ = await asyncio.wait(
            {stopper, server_task, *tasks}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in done - {stopper}:
            status = 1
            exc = task.exception()
            log.error("%s stopped unexpectedly", task.get_name(), exc_info=exc)
        log.info("shutting down")
        for loop in service.loops:
            loop.stop()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=settings.shutdown_grace_s)
            for task in late:
                log.error("%s did not stop in time; cancelling", task.get_name())
                task.cancel()
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server_task, timeout=settings.shutdown_grace_s)
        stopper.cancel()
    log.info("stopped", extra={"status": status})
    return status


def main(settings: S, build: Callable[[S], AbstractAsyncContextManager[Service]]) -> int:
    """Entry point of ``python -m services.<name>``."""
    configure_logging(settings.service_name, settings.log.level, settings.log.json_format)
    return asyncio.run(run_service(settings, build))
