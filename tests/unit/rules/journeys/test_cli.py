"""``python -m services.rules journeys validate``: every error of each file with its path, and
an exit status that says whether all were valid."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.rules.journeys.cli import main
from tests.unit.rules.journeys.builders import document, send

SHIPPED = Path(__file__).parents[4] / "journeys" / "churn-win-back.yaml"


@pytest.fixture(autouse=True)
def _the_shipped_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UPKEEP_RULES_TEMPLATE_DIR", raising=False)


def test_valid_files_pass(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    mine = tmp_path / "mine.json"
    mine.write_text(
        '{"name": "mine", "subject": "channel", "trigger": {"event": "channel.order"},'
        ' "steps": [{"id": "hi", "send": {"to": "owner", "template": "renewal_reminder"}}]}',
        encoding="utf-8",
    )
    assert main(["validate", str(SHIPPED), str(mine)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{SHIPPED}: churn-win-back is valid (3 steps)",
        f"{mine}: mine is valid (1 steps)",
    ]


def test_an_invalid_file_prints_each_error_with_its_path_and_fails(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    doc = document(
        {"id": "a", "wait_for": {"event": "customer.interaction", "timeout": "7 days"}},
        {"id": "b", "send": {"to": "owner", "template": "no_such_template"}},
        trigger={"event": "customer.ordered"},
    )
    bad.write_text(yaml.safe_dump(doc), encoding="utf-8")
    assert main(["validate", str(SHIPPED), str(bad)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{SHIPPED}: churn-win-back is valid (3 steps)"
    printed = {line.split(": ", 2)[1] for line in lines[1:]}
    assert printed == {"trigger.event", "steps.0.wait_for.timeout", "steps.1.send.template"}
    assert all(line.startswith(f"{bad}: ") for line in lines[1:])
    assert any("not a duration ('7 days')" in line for line in lines)


def test_a_file_that_is_not_a_document_fails(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps: [unclosed", encoding="utf-8")
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump(document(send())), encoding="utf-8")
    assert main(["validate", str(broken), str(ok)]) == 1
    out = capsys.readouterr().out
    assert f"{broken}: (document): broken.yaml: not YAML or JSON" in out
    assert f"{ok}: test-journey is valid (1 steps)" in out


def test_validate_needs_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["validate"])
    assert exit_info.value.code == 2
