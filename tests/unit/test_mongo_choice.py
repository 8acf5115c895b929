"""Choosing and building the embedded MongoDB-wire server (``deploy/local/mongo_choice.py``),
with a fake ``cargo`` on the PATH: a build that fails falls back to the Python server and is
not tried again within the hour, unless the compiled one is insisted on; a build that succeeds
is cached and reused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from deploy.local import mongo_choice

FAILING = "#!/bin/sh\necho called >> \"$CALLS\"\necho 'error: linker failed' >&2\nexit 101\n"
# cargo install --root DIR ...: put a binary in DIR/bin, as cargo does
BUILDING = """#!/bin/sh
echo called >> "$CALLS"
while [ "$1" != "--root" ]; do shift; done
mkdir -p "$2/bin" && printf '#!/bin/sh\\n' > "$2/bin/secantusd-rs" && chmod +x "$2/bin/secantusd-rs"
"""


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("UPKEEP_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("UPKEEP_LOCAL_MONGO", raising=False)
    monkeypatch.setenv("CALLS", str(tmp_path / "calls"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "calls"


def fake_cargo(calls: Path, script: str) -> None:
    cargo = calls.parent / "bin" / "cargo"
    cargo.parent.mkdir(exist_ok=True)
    cargo.write_text(script)
    cargo.chmod(cargo.stat().st_mode | stat.S_IEXEC)


def times_called(calls: Path) -> int:
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def test_a_failed_build_falls_back_and_is_not_retried_within_the_hour(calls: Path) -> None:
    fake_cargo(calls, FAILING)
    first = mongo_choice.choose()
    assert first.kind == "python"
    assert "failed (exit 101)" in first.why
    assert "linker failed" in mongo_choice.failure_marker().read_text()
    again = mongo_choice.choose()
    assert again.kind == "python"
    assert "less than an hour ago" in again.why
    assert times_called(calls) == 1
    assert not mongo_choice.binary_path().exists()


def test_insisting_on_the_compiled_server_retries_and_raises(
    calls: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_cargo(calls, FAILING)
    mongo_choice.choose()
    monkeypatch.setenv("UPKEEP_LOCAL_MONGO", "rust")
    with pytest.raises(RuntimeError, match="failed"):
        mongo_choice.choose()
    assert times_called(calls) == 2


def test_a_successful_build_is_cached_and_clears_an_old_failure(calls: Path) -> None:
    mongo_choice.build_dir().mkdir(parents=True)
    mongo_choice.failure_marker().write_text("old")
    os.utime(mongo_choice.failure_marker(), (0, 0))  # more than an hour ago
    fake_cargo(calls, BUILDING)
    built = mongo_choice.choose()
    assert built.kind == "rust"
    assert built.argv == [str(mongo_choice.binary_path())]
    assert mongo_choice.binary_path().exists()
    assert not mongo_choice.failure_marker().exists()
    assert mongo_choice.choose().kind == "rust"
    assert times_called(calls) == 1  # the second choice found the binary


def test_no_toolchain_falls_back_and_python_or_nonsense_are_honoured(
    calls: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(calls.parent / "empty"))
    monkeypatch.setattr(mongo_choice, "_home_cargo", lambda: None)
    assert "no Rust toolchain" in mongo_choice.choose().why
    monkeypatch.setenv("UPKEEP_LOCAL_MONGO", "python")
    assert mongo_choice.choose().kind == "python"
    monkeypatch.setenv("UPKEEP_LOCAL_MONGO", "mongod")
    with pytest.raises(ValueError, match="UPKEEP_LOCAL_MONGO"):
        mongo_choice.choose()
    assert times_called(calls) == 0


def test_both_servers_take_the_same_flags() -> None:
    python = mongo_choice.python_server("test")
    command = python.command("127.0.0.1", 27999, Path("/data"), auth=True)
    assert command[-9:] == [
        "--host", "127.0.0.1", "--port", "27999", "--storage-path", "/data",
        "--log-level", "WARNING", "--auth",
    ]  # fmt: skip
