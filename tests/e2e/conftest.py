"""Fixtures the process tests share: a real SMTP server and a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from deploy.local.mailsink import MailSink
from tests.receivers import HttpReceiver


@pytest.fixture
async def sink() -> AsyncIterator[MailSink]:
    server = MailSink()
    await server.start(port=0)
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[HttpReceiver, str]]:
    """The receiver and its base URL."""
    server = HttpReceiver()
    url = await server.start()
    try:
        yield server, url
    finally:
        await server.stop()
