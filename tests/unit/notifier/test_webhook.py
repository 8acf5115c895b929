"""services/notifier/channels/webhook.py (Standard Webhooks) and the HTTP outcome mapping it shares
with chat (channels/http.py), driven through httpx.MockTransport."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import orjson
import pytest

from services.notifier.channels.http import MAX_REPLY_BYTES, parse_retry_after, send_json
from services.notifier.channels.webhook import WebhookSender, sign, signature_header, verify
from services.notifier.errors import (
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
)

# The published Standard Webhooks test vector (the reference libraries' tests and the spec's docs).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

OLD_SECRET = "whsec_" + "b2xkLXNlY3JldC1mb3ItdGVzdHMtMDEyMzQ1Njc4OQ=="
NEW_SECRET = "whsec_" + "bmV3LXNlY3JldC1mb3ItdGVzdHMtMDEyMzQ1Njc4OQ=="
URL = "https://93.184.216.34/hooks/upkeep?token=s3cret-token"  # public literal: no DNS
PAYLOAD = {"type": "reminder.due", "data": {"customer_id": "C-1", "amount": 12.5, "name": "Zoë"}}

Handler = Callable[[httpx.Request], httpx.Response]


def vector_headers(signature: str = VECTOR_SIGNATURE) -> dict[str, str]:
    return {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": signature,
    }


def sender_for(
    handler: Handler,
    seen: list[httpx.Request],
    *,
    secrets: tuple[str, ...] = (NEW_SECRET,),
    allow_private: bool = False,
) -> WebhookSender:
    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(record))
    return WebhookSender(client, secrets, allow_private=allow_private, timeout_s=5.0)


async def failure(handler: Handler) -> DeliveryError:
    seen: list[httpx.Request] = []
    with pytest.raises(DeliveryError) as caught:
        await sender_for(handler, seen).send(URL, "act-1", PAYLOAD)
    assert "s3cret-token" not in str(caught.value)
    assert "/hooks/upkeep" not in str(caught.value)
    return caught.value


# signing ---------------------------------------------------------------------------------------


def test_the_published_test_vector_reproduces_exactly() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_a_secret_without_the_prefix_is_read_as_base64() -> None:
    bare = VECTOR_SECRET.removeprefix("whsec_")
    assert sign(bare, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_a_malformed_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="base64"):
        sign("whsec_not base64!", VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
    with pytest.raises(ValueError, match="base64"):
        WebhookSender(httpx.AsyncClient(), ["whsec_%%%"], allow_private=False)
    with pytest.raises(ValueError, match="at least one"):
        WebhookSender(httpx.AsyncClient(), [], allow_private=False)


def test_verify_accepts_the_test_vector_within_the_tolerance() -> None:
    assert verify(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP)
    assert verify(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP + 300)
    assert not verify(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP + 301)
    assert not verify(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP - 301)
    assert not verify(VECTOR_SECRET, vector_headers(), VECTOR_BODY)  # 2021 is long past


def test_verify_reads_header_names_in_any_case() -> None:
    headers = {name.title(): value for name, value in vector_headers().items()}
    assert verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP)
    assert verify(VECTOR_SECRET, httpx.Headers(headers), VECTOR_BODY, now=VECTOR_TIMESTAMP)


def test_verify_finds_its_signature_among_others() -> None:
    header = f"v1,bm9wZQ== v1a,c29tZXRoaW5nLWVsc2U= {VECTOR_SIGNATURE}"
    assert verify(VECTOR_SECRET, vector_headers(header), VECTOR_BODY, now=VECTOR_TIMESTAMP)


@pytest.mark.parametrize(
    "change",
    [
        lambda h, b: (h, b + b" "),  # tampered body
        lambda h, b: (h, b.replace(b"2432232314", b"2432232315")),
        lambda h, b: ({**h, "webhook-id": "msg_other"}, b),
        lambda h, b: ({**h, "webhook-timestamp": str(VECTOR_TIMESTAMP + 1)}, b),
        lambda h, b: ({**h, "webhook-timestamp": "soon"}, b),
        lambda h, b: ({**h, "webhook-signature": VECTOR_SIGNATURE.replace("v1,", "v2,")}, b),
        lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b),
        lambda h, b: ({k: v for k, v in h.items() if k != "webhook-id"}, b),
    ],
)
def test_verify_refuses_anything_changed_or_missing(
    change: Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]],
) -> None:
    headers, body = change(vector_headers(), VECTOR_BODY)
    assert not verify(VECTOR_SECRET, headers, body, now=VECTOR_TIMESTAMP)


def test_verify_refuses_another_secret() -> None:
    assert not verify(NEW_SECRET, vector_headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP)


def test_rotation_signs_with_every_secret_and_each_verifies() -> None:
    header = signature_header([NEW_SECRET, OLD_SECRET], "msg_1", 1_700_000_000, b"{}")
    signatures = header.split(" ")
    assert len(signatures) == 2
    assert signatures[0] == sign(NEW_SECRET, "msg_1", 1_700_000_000, b"{}")
    assert signatures[1] == sign(OLD_SECRET, "msg_1", 1_700_000_000, b"{}")
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": "1700000000",
        "webhook-signature": header,
    }
    for secret in (NEW_SECRET, OLD_SECRET):
        assert verify(secret, headers, b"{}", now=1_700_000_000)
    assert not verify(VECTOR_SECRET, headers, b"{}", now=1_700_000_000)


# sending ---------------------------------------------------------------------------------------


async def test_send_posts_the_signed_payload() -> None:
    seen: list[httpx.Request] = []
    sender = sender_for(lambda _: httpx.Response(200, text="ok"), seen)
    before = int(time.time())
    status = await sender.send(URL, "act-1", PAYLOAD)
    after = int(time.time())

    assert status == 200
    [request] = seen
    assert request.method == "POST"
    assert str(request.url) == URL  # the URL's own query is kept as it is
    assert request.content == orjson.dumps(PAYLOAD)
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "Upkeep-Notifier/1"
    assert request.headers["webhook-id"] == "act-1"
    timestamp = int(request.headers["webhook-timestamp"])
    assert before <= timestamp <= after
    assert request.headers["webhook-signature"] == sign(
        NEW_SECRET, "act-1", timestamp, request.content
    )
    assert verify(NEW_SECRET, request.headers, request.content)
    assert not verify(NEW_SECRET, request.headers, request.content + b" ")


async def test_send_during_a_rotation_carries_both_signatures() -> None:
    seen: list[httpx.Request] = []
    sender = sender_for(lambda _: httpx.Response(204), seen, secrets=(NEW_SECRET, OLD_SECRET))
    assert await sender.send(URL, "act-2", PAYLOAD) == 204
    [request] = seen
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert verify(NEW_SECRET, request.headers, request.content)
    assert verify(OLD_SECRET, request.headers, request.content)


async def test_a_private_destination_is_refused_before_any_request() -> None:
    seen: list[httpx.Request] = []
    sender = sender_for(lambda _: httpx.Response(200), seen)
    with pytest.raises(PermanentDeliveryError) as caught:
        await sender.send("http://127.0.0.1:8080/hook", "act-1", PAYLOAD)
    assert caught.value.reason == "forbidden_address"
    assert seen == []


async def test_a_private_destination_is_allowed_when_configured() -> None:
    seen: list[httpx.Request] = []
    sender = sender_for(lambda _: httpx.Response(200), seen, allow_private=True)
    assert await sender.send("http://127.0.0.1:8080/hook", "act-1", PAYLOAD) == 200
    assert len(seen) == 1


async def test_a_payload_that_is_not_json_is_permanent() -> None:
    seen: list[httpx.Request] = []
    with pytest.raises(PermanentDeliveryError) as caught:
        await sender_for(lambda _: httpx.Response(200), seen).send(URL, "a", {"x": object()})
    assert caught.value.reason == "invalid_payload"
    assert seen == []


# what an answer means --------------------------------------------------------------------------


async def test_429_with_retry_after_in_seconds_is_transient() -> None:
    error = await failure(lambda _: httpx.Response(429, headers={"Retry-After": "120"}))
    assert isinstance(error, TransientDeliveryError)
    assert (error.reason, error.retry_after) == ("http_429", 120.0)
    assert "93.184.216.34" in error.detail


async def test_429_with_retry_after_as_a_date_is_transient() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    error = await failure(lambda _: httpx.Response(429, headers={"Retry-After": when}))
    assert isinstance(error, TransientDeliveryError)
    assert error.reason == "http_429"
    assert error.retry_after is not None
    assert 80 <= error.retry_after <= 90


@pytest.mark.parametrize(
    ("status", "retry_after"), [(503, None), (500, None), (502, None), (504, None), (408, None)]
)
async def test_server_errors_and_408_are_transient(status: int, retry_after: float | None) -> None:
    error = await failure(lambda _: httpx.Response(status, text="busy"))
    assert isinstance(error, TransientDeliveryError)
    assert (error.reason, error.retry_after) == (f"http_{status}", retry_after)


async def test_503_with_retry_after_keeps_the_hint() -> None:
    error = await failure(lambda _: httpx.Response(503, headers={"Retry-After": "7"}))
    assert isinstance(error, TransientDeliveryError)
    assert (error.reason, error.retry_after) == ("http_503", 7.0)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 422])
async def test_client_errors_are_permanent(status: int) -> None:
    error = await failure(lambda _: httpx.Response(status, text="no"))
    assert isinstance(error, PermanentDeliveryError)
    assert error.reason == f"http_{status}"


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_redirects_are_not_followed_and_are_permanent(status: int) -> None:
    seen: list[httpx.Request] = []
    elsewhere = "https://93.184.216.35/other"
    sender = sender_for(lambda _: httpx.Response(status, headers={"Location": elsewhere}), seen)
    with pytest.raises(PermanentDeliveryError) as caught:
        await sender.send(URL, "act-1", PAYLOAD)
    assert caught.value.reason == f"http_{status}"
    assert len(seen) == 1


async def test_a_timeout_is_transient() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    error = await failure(hang)
    assert isinstance(error, TransientDeliveryError)
    assert error.reason == "timeout"


async def test_a_refused_connection_is_transient() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    error = await failure(refuse)
    assert isinstance(error, TransientDeliveryError)
    assert error.reason == "connect_error"


async def test_a_broken_connection_is_transient() -> None:
    def cut(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("peer closed connection", request=request)

    error = await failure(cut)
    assert isinstance(error, TransientDeliveryError)
    assert error.reason == "transport_error"


async def test_only_the_start_of_a_huge_answer_is_read() -> None:
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda _: httpx.Response(200, content=b"x" * 10_000_000))
    )
    reply = await send_json(client, URL, b"{}", timeout_s=5.0)
    assert reply.status == 200
    assert len(reply.body) == MAX_REPLY_BYTES


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # already past
        ("-5", None),
        ("1.5", None),
        ("²", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after(value, now=now) == seconds
