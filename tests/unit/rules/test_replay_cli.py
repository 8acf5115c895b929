"""The replay command's arguments: it never publishes, so it insists on --dry-run."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.rules.replay import main, parse_start


def test_replay_refuses_to_run_without_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--from", "0"])
    assert exit_info.value.code == 2
    assert "only --dry-run is supported" in capsys.readouterr().err


def test_start_is_an_offset_or_a_time() -> None:
    assert parse_start("42") == 42
    assert parse_start("2026-10-01T00:00:00Z") == datetime(2026, 10, 1, tzinfo=UTC)
    assert parse_start("2026-10-01T08:00:00") == datetime(2026, 10, 1, 8, tzinfo=UTC)
    with pytest.raises(ValueError, match="Invalid isoformat"):
        parse_start("last tuesday")
