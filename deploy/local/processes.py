"""Background processes tracked by pid files, stopped by pid (never by name).

A pid file holds the pid and the process start time (from ``/proc``), so a stale pid file whose
pid was reused by another program is recognised and that program is left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def _start_ticks(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may contain spaces; fields after the closing parenthesis are fixed
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass(frozen=True)
class Managed:
    """One named process whose pid file and log live in a state directory."""

    name: str
    state_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "pids" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid if this process is running, else ``None`` (and a stale pid file is removed)."""
        try:
            pid_text, ticks = self.pid_file.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if _start_ticks(pid) != ticks or _is_zombie(pid):
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def start(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> int:
        """Start detached (own session) unless already running; returns the pid."""
        running = self.pid()
        if running is not None:
            return running
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        ticks = None
        for _ in range(50):
            ticks = _start_ticks(proc.pid)
            if ticks:
                break
            time.sleep(0.01)
        self.pid_file.write_text(f"{proc.pid} {ticks}\n")
        return proc.pid

    def signal(self, sig: int) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, sig)
        return True

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. True if it was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid() is None:
                break
            _reap(pid)
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            for _ in range(50):
                _reap(pid)
                if self.pid() is None:
                    break
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL at once (fault-injection tests)."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            for _ in range(100):
                _reap(pid)
                if self.pid() is None:
                    break
                time.sleep(0.05)
            self.pid_file.unlink(missing_ok=True)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (started by this Python process)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
