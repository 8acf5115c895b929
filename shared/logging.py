"""Structured JSON logs that never carry an e-mail address or a phone number.

Every record passes through :class:`RedactingFilter`, which rewrites the message and every extra
field, so a careless ``log.info("sent to %s", email)`` is still safe.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
PHONE_RE = re.compile(
    r"""(?<![\w.+/:-])(?:
        \+\d(?:[\s\-().]{0,2}\d){6,16}          # international: +44 20 7946 0958
      | 1[3-9]\d{9}                             # mainland China mobile: 13812345678
      | \(?\d{2,5}\)?(?:[\s-]\d{2,5}){1,4}      # grouped national: (020) 7946-0958
    )(?![\w.:/-])""",
    re.VERBOSE,
)
DATE_LIKE = re.compile(r"^\d{4}-\d{2}(-\d{2})?$")
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)
_DROPPED_ATTRS = ("color_message",)  # uvicorn's ANSI-coloured duplicate of the message


def _phone(match: re.Match[str]) -> str:
    found = match.group(0)
    digits = sum(ch.isdigit() for ch in found)
    if digits < 7 or DATE_LIKE.match(found):
        return found
    return "[phone]"


def redact(text: str) -> str:
    """Replace e-mail addresses and phone numbers in ``text``.

    Plain digit runs (offsets, byte counts), dates, times and IP addresses are kept; numbers
    written the way phones are (``+country``, grouped with spaces or dashes, Chinese mobiles)
    are replaced."""
    return PHONE_RE.sub(_phone, EMAIL_RE.sub("[email]", text))


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Redacts personal data from the message, its arguments and extra fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        for key in _DROPPED_ATTRS:
            record.__dict__.pop(key, None)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS:
                setattr(record, key, _redact_value(value))
        return True


class RedactingJsonFormatter(JsonFormatter):
    """JSON lines; exception and stack text are redacted too (they are formatted late)."""

    def formatException(self, ei: Any) -> str | list[str]:  # type: ignore[override]
        return _redact_value(super().formatException(ei))  # type: ignore[no-any-return]

    def formatStack(self, stack_info: str) -> str | list[str]:  # type: ignore[override]
        return _redact_value(super().formatStack(stack_info))  # type: ignore[no-any-return]


class RedactingTextFormatter(logging.Formatter):
    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))


def configure_logging(service: str, level: str = "INFO", json_format: bool = True) -> None:
    """Install one redacting stderr handler on the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_upkeep", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._upkeep = True  # type: ignore[attr-defined]
    handler.addFilter(RedactingFilter())
    if json_format:
        handler.setFormatter(
            RedactingJsonFormatter(
                "{levelname}{name}{message}",
                style="{",
                timestamp="ts",
                rename_fields={"levelname": "level", "name": "logger"},
                static_fields={"service": service},
            )
        )
    else:
        handler.setFormatter(
            RedactingTextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
        )
    root.addHandler(handler)
    root.setLevel(level)
    # aiokafka is chatty at INFO during every rebalance; keep its warnings.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
