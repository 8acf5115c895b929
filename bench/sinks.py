"""The benchmarks' SMTP server and webhook receiver in a process of their own, so the service
measured does not share its interpreter (and its core) with the receivers of its messages:
``python -m bench.sinks`` prints ``{"smtp_port": …, "http_url": …}`` on one line, serves until
its standard input closes, then prints what it received.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from deploy.local.mailsink import MailSink
from tests.receivers import HttpReceiver


@dataclass(frozen=True)
class Sinks:
    smtp_port: int
    http_url: str


@contextmanager
def sinks_process() -> Iterator[Sinks]:
    """Start the sinks in a child process; stops it on leaving."""
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.sinks"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        ready = json.loads(child.stdout.readline() or "{}")
        if "smtp_port" not in ready:
            raise RuntimeError("the sinks process did not start")
        yield Sinks(ready["smtp_port"], ready["http_url"])
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


async def _serve() -> None:
    sink, receiver = MailSink(), HttpReceiver()
    port = await sink.start(port=0)
    url = await receiver.start()
    sys.stdout.write(json.dumps({"smtp_port": port, "http_url": url}) + "\n")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes it
    await sink.stop()
    await receiver.stop()
    received = {"mails": len(sink.messages), "webhooks": len(receiver.received)}
    sys.stdout.write(json.dumps(received) + "\n")


if __name__ == "__main__":
    asyncio.run(_serve())
