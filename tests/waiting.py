"""Waiting for asynchronous progress: poll a condition under a generous deadline instead of
sleeping a fixed time and hoping that was long enough (CI runs on a busy 2-core machine).

A test that asserts that something does *not* happen first waits here for a positive sign that
the system got far enough (a later record handled, a group's offsets committed), and only then
may look for the unwanted thing for a bounded time.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


# What ``check`` gives back is returned only once it is truthy, so never as None.
@overload
async def eventually(
    check: Callable[[], Awaitable[T | None]],
    timeout: float = 60,
    *,
    interval: float = 0.1,
    what: str | Callable[[], object] = "",
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T | None],
    timeout: float = 60,
    *,
    interval: float = 0.1,
    what: str | Callable[[], object] = "",
) -> T: ...


async def eventually(
    check: Callable[[], Any],
    timeout: float = 60,
    *,
    interval: float = 0.1,
    what: str | Callable[[], object] = "",
) -> Any:
    """Call ``check`` (plain or async) every ``interval`` seconds until it returns something
    truthy, and return that. After ``timeout`` seconds the test fails with an AssertionError
    naming ``what`` (a text, or a function called then, to show the state that was reached)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        if time.monotonic() >= deadline:
            detail = what() if callable(what) else what
            name = getattr(check, "__qualname__", repr(check))
            raise AssertionError(f"not reached within {timeout:g} s: {detail or name}")
        await asyncio.sleep(interval)
