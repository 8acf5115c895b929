"""The rules service as a process of its own, run the way ``python -m services.rules`` runs it
but on a clock the test moves:
``python -m tests.integration.clocked_rules CLOCK_FILE [KILL_FILE]``.

``CLOCK_FILE`` holds one RFC 3339 moment. The engine reads it whenever it asks the time (once
per batch and per tick), so a test makes minutes or days pass in a moment — and can still
kill -9 the process, which an in-process service with a ``Clock`` object cannot survive.

``KILL_FILE`` (optional) arms a kill -9 at the worst moment: once the file exists, the first
tick that sends an action kills the process with SIGKILL after the tick stored its state and
timers, before its Kafka transaction commits (the file is removed first, so the restarted
process runs on).
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import datetime
from functools import partial
from pathlib import Path


class FileClock:
    """The moment written in ``path`` (:func:`set_clock` writes it atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self) -> datetime:
        return datetime.fromisoformat(self.path.read_text(encoding="utf-8").strip())


def set_clock(path: Path, moment: datetime) -> None:
    """Move the clock of every process reading ``path`` (never a half-written file)."""
    partial_file = path.with_name(path.name + ".new")
    partial_file.write_text(moment.isoformat(), encoding="utf-8")
    os.replace(partial_file, path)


def arm_kill(kill_file: Path, actions_topic: str) -> None:
    """Make the engine kill its own process at the end of the tick described above."""
    from services.rules.engine import RulesEngine
    from shared.kafka.messages import HandlerResult

    tick = RulesEngine.tick

    def dies_after(result: HandlerResult) -> bool:
        if not kill_file.exists() or not any(m.topic == actions_topic for m in result.messages):
            return False
        kill_file.unlink()  # the restarted process runs on
        return True

    async def tick_then_maybe_die(self: RulesEngine, partitions: set[int]) -> HandlerResult:
        result = await tick(self, partitions)
        if dies_after(result):  # state and timers stored, the transaction not committed
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    RulesEngine.tick = tick_then_maybe_die  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    from services.rules.service import build
    from services.rules.settings import RulesSettings
    from shared.runtime import main as run

    clock_file, *kill_file = argv
    settings = RulesSettings()
    if kill_file:
        arm_kill(Path(kill_file[0]), settings.topics.actions)
    return run(settings, partial(build, clock=FileClock(Path(clock_file))))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
