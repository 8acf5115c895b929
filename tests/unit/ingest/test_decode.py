"""services/ingest/decode.py: the three accepted forms and every way a record is refused."""

from __future__ import annotations

import orjson
import pytest

from services.ingest.decode import RawEvent, decode_object, decode_record
from services.ingest.reasons import Reason, Rejection

MAX = 64 * 1024
DATA = {"customer_id": "C-1", "name": "Li Wei", "timezone": "Asia/Shanghai"}
CE_HEADERS = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"evt-1"),
    ("ce_source", b"crm"),
    ("ce_type", b"customer.upserted"),
]


def decoded(result: RawEvent | Rejection) -> RawEvent:
    assert isinstance(result, RawEvent), result
    return result


def rejected(result: RawEvent | Rejection) -> Reason:
    assert isinstance(result, Rejection), result
    return result.reason


def test_binary_mode_takes_attributes_from_ce_headers_and_data_from_value() -> None:
    headers = [*CE_HEADERS, ("content-type", b"application/json")]
    raw = decoded(decode_record(orjson.dumps(DATA), headers, max_bytes=MAX))
    assert raw.form == "binary"
    assert raw.attributes["specversion"] == "1.0"
    assert raw.attributes["id"] == "evt-1"
    assert raw.attributes["source"] == "crm"
    assert raw.attributes["type"] == "customer.upserted"
    assert raw.attributes["datacontenttype"] == "application/json"
    assert raw.data == DATA


def test_binary_mode_header_names_are_case_insensitive() -> None:
    headers = [(name.upper(), value) for name, value in CE_HEADERS]
    raw = decoded(decode_record(orjson.dumps(DATA), headers, max_bytes=MAX))
    assert raw.form == "binary"
    assert raw.attributes["type"] == "customer.upserted"


def test_binary_mode_without_content_type_assumes_json() -> None:
    raw = decoded(decode_record(orjson.dumps(DATA), CE_HEADERS, max_bytes=MAX))
    assert raw.attributes["datacontenttype"] == "application/json"
    assert raw.data == DATA


def test_binary_mode_accepts_json_media_type_with_parameters() -> None:
    headers = [*CE_HEADERS, ("content-type", b"application/json; charset=utf-8")]
    raw = decoded(decode_record(orjson.dumps(DATA), headers, max_bytes=MAX))
    assert raw.data == DATA


@pytest.mark.parametrize("content_type", [b"text/plain", b"application/xml", b"image/png"])
def test_binary_mode_refuses_non_json_content_type(content_type: bytes) -> None:
    headers = [*CE_HEADERS, ("content-type", content_type)]
    result = decode_record(b"<a/>", headers, max_bytes=MAX)
    assert rejected(result) is Reason.UNSUPPORTED_CONTENT_TYPE


def test_binary_mode_refuses_invalid_json_data() -> None:
    result = decode_record(b"{not json", CE_HEADERS, max_bytes=MAX)
    assert rejected(result) is Reason.INVALID_JSON


def test_binary_mode_with_empty_value_has_no_data() -> None:
    raw = decoded(decode_record(None, CE_HEADERS, max_bytes=MAX))
    assert raw.data is None


def test_structured_mode_detected_by_specversion_in_body() -> None:
    body = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "crm",
        "type": "customer.upserted",
        "data": DATA,
    }
    raw = decoded(decode_record(orjson.dumps(body), [], max_bytes=MAX))
    assert raw.form == "structured"
    assert raw.data == DATA
    assert "data" not in raw.attributes
    assert raw.attributes["id"] == "evt-1"
    assert raw.attributes["type"] == "customer.upserted"


def test_structured_mode_detected_by_cloudevents_content_type_header() -> None:
    body = {"id": "evt-1", "source": "crm", "type": "customer.upserted", "data": DATA}
    headers = [("content-type", b"application/cloudevents+json; charset=utf-8")]
    raw = decoded(decode_record(orjson.dumps(body), headers, max_bytes=MAX))
    assert raw.form == "structured"
    assert raw.data == DATA
    assert "specversion" not in raw.attributes  # normalise refuses it later


def test_structured_mode_refuses_data_base64() -> None:
    body = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "crm",
        "type": "customer.upserted",
        "data_base64": "eyJhIjoxfQ==",
    }
    result = decode_record(orjson.dumps(body), [], max_bytes=MAX)
    assert rejected(result) is Reason.UNSUPPORTED_CONTENT_TYPE


def test_structured_mode_refuses_non_json_datacontenttype() -> None:
    body = {"specversion": "1.0", "type": "t", "datacontenttype": "text/csv", "data": "a,b"}
    assert rejected(decode_object(body)) is Reason.UNSUPPORTED_CONTENT_TYPE


def test_structured_mode_accepts_json_suffix_datacontenttype() -> None:
    body = {"specversion": "1.0", "type": "t", "datacontenttype": "application/vnd.x+json"}
    assert decoded(decode_object(body)).form == "structured"


def test_plain_json_splits_envelope_fields_from_data() -> None:
    body = {
        "type": "customer.upserted",
        "id": "evt-1",
        "source": "crm",
        "time": "2026-11-22T10:00:00+08:00",
        "subject": "whatever",
        **DATA,
    }
    raw = decoded(decode_record(orjson.dumps(body), [], max_bytes=MAX))
    assert raw.form == "plain"
    assert raw.attributes == {
        "type": "customer.upserted",
        "id": "evt-1",
        "source": "crm",
        "time": "2026-11-22T10:00:00+08:00",
        "subject": "whatever",
    }
    assert raw.data == DATA


def test_plain_json_without_type_is_missing_type() -> None:
    result = decode_record(orjson.dumps(DATA), [], max_bytes=MAX)
    assert rejected(result) is Reason.MISSING_TYPE


@pytest.mark.parametrize("value", [b"{not json", b"", b"\xff\xfe", b'{"type": "x"'])
def test_invalid_json_is_refused(value: bytes) -> None:
    assert rejected(decode_record(value, [], max_bytes=MAX)) is Reason.INVALID_JSON


def test_missing_value_is_invalid_json() -> None:
    assert rejected(decode_record(None, [], max_bytes=MAX)) is Reason.INVALID_JSON


@pytest.mark.parametrize(
    "value",
    [b"[" * 5000 + b"]" * 5000, b'{"a":' * 5000 + b"1" + b"}" * 5000],
    ids=["arrays", "objects"],
)
def test_deeply_nested_json_is_invalid_json_not_recursion_error(value: bytes) -> None:
    result = decode_record(value, [], max_bytes=len(value) + 1)
    assert rejected(result) is Reason.INVALID_JSON


def test_deeply_nested_binary_data_is_invalid_json() -> None:
    value = b"[" * 5000 + b"]" * 5000
    result = decode_record(value, CE_HEADERS, max_bytes=len(value) + 1)
    assert rejected(result) is Reason.INVALID_JSON


@pytest.mark.parametrize(
    ("value", "kind"),
    [(b"[1, 2]", "an array"), (b'"text"', "a string"), (b"42", "a number"), (b"null", "null")],
)
def test_json_that_is_not_an_object_is_refused(value: bytes, kind: str) -> None:
    result = decode_record(value, [], max_bytes=MAX)
    assert rejected(result) is Reason.NOT_AN_OBJECT
    assert isinstance(result, Rejection)
    assert kind in result.detail


def test_value_over_max_bytes_is_oversized() -> None:
    value = orjson.dumps({"type": "customer.upserted", "pad": "x" * 200})
    result = decode_record(value, [], max_bytes=100)
    assert rejected(result) is Reason.OVERSIZED
    assert isinstance(result, Rejection)
    assert "100" in result.detail


def test_value_of_exactly_max_bytes_is_accepted() -> None:
    value = orjson.dumps({"type": "customer.upserted", **DATA})
    assert decoded(decode_record(value, [], max_bytes=len(value))).form == "plain"


def test_oversized_is_checked_before_binary_mode() -> None:
    result = decode_record(b"x" * 500, CE_HEADERS, max_bytes=100)
    assert rejected(result) is Reason.OVERSIZED


def test_decode_object_structured_flag_forces_structured_form() -> None:
    body = {"type": "customer.upserted", "data": DATA}
    assert decoded(decode_object(body, structured=True)).form == "structured"
    assert decoded(decode_object(body)).form == "plain"
