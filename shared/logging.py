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
# international or long national numbers, allowing the usual separators; dates and ids with
# fewer than 7 digits are left alone.
PHONE_RE = re.compile(r"(?<![\w.])\+?\d(?:[\s\-().]?\d){6,16}(?![\w.])")
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)
_DROPPED_ATTRS = ("color_message",)  # uvicorn's ANSI-coloured duplicate of the message


def redact(text: str) -> str:
    """Replace e-mail addresses and phone numbers in ``text``."""
    return PHONE_RE.sub("[phone]", EMAIL_RE.sub("[email]", text))


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
            JsonFormatter(
                "{levelname}{name}{message}",
                style="{",
                timestamp="ts",
                rename_fields={"levelname": "level", "name": "logger"},
                static_fields={"service": service},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    # aiokafka is chatty at INFO during every rebalance; keep its warnings.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
