"""shared/logging.py: no e-mail address or phone number reaches the log output."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from shared.logging import RedactingFilter, configure_logging, redact

EMAIL = "li.wei@example.com"
PHONE = "+44 20 7946 0958"


@pytest.fixture
def plain_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose only handler redacts and writes ``message | extras | exception``."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("tests.unit.logging.plain")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """The real configuration: configure_logging's handler, writing to a StringIO."""
    root = logging.getLogger()
    before_handlers, before_level = list(root.handlers), root.level
    aiokafka_level = logging.getLogger("aiokafka").level
    configure_logging("unit", level="DEBUG", json_format=True)
    (handler,) = [h for h in root.handlers if getattr(h, "_upkeep", False)]
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    handler.setStream(stream)
    yield logging.getLogger("tests.unit.logging.json"), stream
    for ours in [h for h in root.handlers if getattr(h, "_upkeep", False)]:
        root.removeHandler(ours)
    for old in before_handlers:
        if old not in root.handlers:
            root.addHandler(old)
    root.setLevel(before_level)
    logging.getLogger("aiokafka").setLevel(aiokafka_level)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize(
    "text",
    [
        EMAIL,
        "Li.Wei+crm@Mail.Example.CO.UK",
        PHONE,
        "+442079460958",
        "020 7946 0958",
        "+86 138 0013 8000",
    ],
)
def test_redact_removes_emails_and_phones(text: str) -> None:
    out = redact(f"contact {text} now")
    assert text not in out
    assert out.startswith("contact [")
    assert out.endswith("] now")


def test_redact_removes_subscriber_digits_of_bracketed_phone() -> None:
    out = redact("call (020) 7946-0958")
    assert "7946" not in out
    assert "0958" not in out
    assert "[phone]" in out


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-22T02:00:00Z",
        "listening on 127.0.0.1:8001",
        "port 9092",
        "customer C-1001",
        "partition 3 offset 12345",
        "262144 bytes",
        "v1.2.3",
        "version 3.9.1",
    ],
)
def test_redact_keeps_ordinary_numbers(text: str) -> None:
    assert redact(text) == text


def test_redact_keeps_plain_dates() -> None:
    assert redact("renewal due 2026-11-22") == "renewal due 2026-11-22"


def test_redact_keeps_large_counts() -> None:
    assert redact("offset 1234567, 2097152 bytes") == "offset 1234567, 2097152 bytes"


def test_message_and_percent_args_are_redacted(
    plain_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = plain_log
    logger.info("sent to %s and %s for %s", EMAIL, PHONE, "C-1001")
    out = stream.getvalue()
    assert EMAIL not in out
    assert "7946" not in out
    assert "sent to [email] and [phone] for C-1001" in out


def test_message_with_mapping_args_is_redacted(
    plain_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = plain_log
    logger.info("to %(to)s", {"to": EMAIL})
    assert stream.getvalue().strip() == "to [email]"


def test_extra_fields_are_redacted_in_nested_structures() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    extra = vars(record)  # where Logger.makeRecord puts ``extra=``: not declared on LogRecord
    extra["recipient"] = EMAIL
    extra["contact"] = {"phones": [PHONE, "C-1"], "deep": {"mail": EMAIL, "port": 8001}}
    extra["pair"] = (EMAIL, 7)
    assert RedactingFilter().filter(record) is True
    assert extra["recipient"] == "[email]"
    assert extra["contact"] == {
        "phones": ["[phone]", "C-1"],
        "deep": {"mail": "[email]", "port": 8001},
    }
    assert extra["pair"] == ["[email]", 7]


def test_exception_text_is_redacted_by_plain_formatter(
    plain_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = plain_log
    try:
        raise ValueError(f"cannot reach {EMAIL} or {PHONE}")
    except ValueError:
        logger.exception("delivery failed")
    out = stream.getvalue()
    assert "ValueError: cannot reach [email] or [phone]" in out
    assert EMAIL not in out
    assert "7946" not in out


def test_json_output_redacts_message_and_extras(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    logger.warning(
        "bounce from %s on port %d",
        EMAIL,
        8001,
        extra={"to": [EMAIL, {"sms": PHONE}], "customer": "C-1001", "day": "2026-11-22T00:00:00Z"},
    )
    (line,) = records(stream)
    assert line["message"] == "bounce from [email] on port 8001"
    assert line["to"] == ["[email]", {"sms": "[phone]"}]
    assert line["customer"] == "C-1001"
    assert line["day"] == "2026-11-22T00:00:00Z"
    assert line["service"] == "unit"
    assert line["level"] == "WARNING"
    assert EMAIL not in stream.getvalue()


def test_configure_logging_is_idempotent(json_log: tuple[logging.Logger, io.StringIO]) -> None:
    configure_logging("unit", level="DEBUG")
    configure_logging("unit", level="DEBUG")
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_upkeep", False)]
    assert len(ours) == 1


def test_json_output_redacts_exception_text(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    try:
        raise ValueError(f"cannot reach {EMAIL}")
    except ValueError:
        logger.exception("delivery failed")
    assert EMAIL not in stream.getvalue()
