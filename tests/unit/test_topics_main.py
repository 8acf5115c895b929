"""``python -m shared.kafka.topics`` (Compose's ``topics`` job) reports what it created without
tripping over logging's own record attributes: it once exited 1 after making the topics, so the
job restarted and no service started."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from shared.kafka import topics


async def made(*_: Any, **__: Any) -> list[str]:
    return ["upkeep.events.v1"]


def test_the_topics_job_logs_what_it_created_and_exits_0(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(topics, "ensure_topics", made)
    monkeypatch.setattr(topics, "configure_logging", lambda service: None)
    with caplog.at_level(logging.INFO, logger=topics.log.name):
        assert topics.main() == 0
    (record,) = [r for r in caplog.records if r.getMessage() == "topics ready"]
    assert vars(record)["topics_created"] == ["upkeep.events.v1"]
