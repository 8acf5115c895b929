"""services/notifier/channels/chat.py: each platform's message, signature and verdict, driven
through httpx.MockTransport. The senders here allow private destinations so that the platforms'
real host names need no DNS lookup (the guard has its own tests)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest

from services.notifier.channels.chat import ChatSender, Platform, chat_body, detect_platform
from services.notifier.errors import (
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
)

DINGTALK = "https://oapi.dingtalk.com/robot/send?access_token=ding-token-123"
WECOM = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=wecom-key-456"
FEISHU = "https://open.feishu.cn/open-apis/bot/v2/hook/feishu-hook-789"
LARK = "https://open.larksuite.com/open-apis/bot/v2/hook/lark-hook-000"
SLACK = "https://hooks.slack.com/services/T000/B000/slack-token-abc"
TOKENS = ("ding-token-123", "wecom-key-456", "feishu-hook-789", "slack-token-abc")
DING_SECRET = "SEC0123456789abcdef-dingtalk-test-secret"
FEISHU_SECRET = "feishu-test-secret"

Handler = Callable[[httpx.Request], httpx.Response]


def sender_for(
    handler: Handler, seen: list[httpx.Request], secrets: dict[str, str] | None = None
) -> ChatSender:
    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(record))
    return ChatSender(client, secrets or {}, allow_private=True, timeout_s=5.0)


def answer(body: dict[str, Any], status: int = 200) -> Handler:
    return lambda _: httpx.Response(status, json=body)


async def failure(url: str, handler: Handler) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        await sender_for(handler, []).send(url, None, "Renewal due", "Contract C-1 renews soon.")
    assert not any(token in str(caught.value) for token in TOKENS)
    return caught.value


# detection and bodies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "platform"),
    [
        (DINGTALK, "dingtalk"),
        (WECOM, "wecom"),
        (FEISHU, "feishu"),
        (LARK, "feishu"),
        (SLACK, "slack"),
        ("https://HOOKS.SLACK.COM/services/x", "slack"),
        ("https://hooks.slack.com.evil.example/services/x", None),
        ("https://example.com/hook", None),
        ("not a url", None),
    ],
)
def test_detect_platform_by_host(url: str, platform: Platform | None) -> None:
    assert detect_platform(url) == platform


def test_dingtalk_markdown_unsigned() -> None:
    body, params = chat_body("dingtalk", "Renewal due", "Contract **C-1** renews soon.")
    assert body == {
        "msgtype": "markdown",
        "markdown": {
            "title": "Renewal due",
            "text": "#### Renewal due\n\nContract **C-1** renews soon.",
        },
    }
    assert params == {}


def test_dingtalk_signature_goes_in_the_query() -> None:
    now_ms = 1_700_000_000_123
    _, params = chat_body("dingtalk", "t", "x", secret=DING_SECRET, now_ms=now_ms)
    # DingTalk: HmacSHA256 keyed with the secret over "timestamp\nsecret", then Base64
    string_to_sign = f"{now_ms}\n{DING_SECRET}".encode()
    mac = hmac.new(DING_SECRET.encode(), string_to_sign, hashlib.sha256).digest()
    assert params == {"timestamp": "1700000000123", "sign": base64.b64encode(mac).decode()}


def test_wecom_markdown() -> None:
    body, params = chat_body("wecom", "Renewal due", "Contract C-1 renews soon.")
    assert body == {
        "msgtype": "markdown",
        "markdown": {"content": "#### Renewal due\n\nContract C-1 renews soon."},
    }
    assert params == {}


def test_feishu_post_unsigned_and_signed() -> None:
    post = {
        "zh_cn": {
            "title": "Renewal due",
            "content": [[{"tag": "text", "text": "Contract C-1 renews soon."}]],
        }
    }
    body, params = chat_body("feishu", "Renewal due", "Contract C-1 renews soon.")
    assert body == {"msg_type": "post", "content": {"post": post}}
    assert params == {}

    signed, params = chat_body(
        "feishu",
        "Renewal due",
        "Contract C-1 renews soon.",
        secret=FEISHU_SECRET,
        now_ms=1_700_000_000_999,
    )
    # Feishu: HmacSHA256 keyed with "timestamp\nsecret" over an empty message, then Base64
    mac = hmac.new(f"1700000000\n{FEISHU_SECRET}".encode(), b"", hashlib.sha256).digest()
    assert signed == {
        "timestamp": "1700000000",
        "sign": base64.b64encode(mac).decode(),
        "msg_type": "post",
        "content": {"post": post},
    }
    assert params == {}


def test_slack_blocks_with_a_fallback_text() -> None:
    body, params = chat_body("slack", "Renewal due", "Contract *C-1* renews soon.", secret="x")
    assert body == {
        "text": "Renewal due\nContract *C-1* renews soon.",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "Renewal due"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "Contract *C-1* renews soon."}},
        ],
    }
    assert params == {}


def test_titles_stay_on_one_line() -> None:
    body, _ = chat_body("dingtalk", "Renewal\n due\t now", "x")
    assert body["markdown"]["title"] == "Renewal due now"


# length limits ---------------------------------------------------------------------------------


def test_wecom_content_is_cut_to_4096_bytes_between_characters() -> None:
    body, _ = chat_body("wecom", "标题", "续约提醒" * 2000)
    content = body["markdown"]["content"]
    assert len(content.encode()) <= 4096
    assert content.startswith("#### 标题\n\n续约提醒")
    assert content.endswith("…")


def test_dingtalk_text_is_cut_to_20000_bytes() -> None:
    body, _ = chat_body("dingtalk", "t", "é" * 30_000)
    assert len(body["markdown"]["text"].encode()) <= 20_000
    assert body["markdown"]["text"].endswith("é…")


def test_short_texts_are_untouched() -> None:
    text = "é" * 1000
    body, _ = chat_body("wecom", "t", text)
    assert body["markdown"]["content"].endswith(text)


@pytest.mark.parametrize("text", ['"quoted"\n' * 5000, "飞书" * 20_000, "x" * 100_000])
def test_feishu_body_stays_within_20_kb(text: str) -> None:
    body, _ = chat_body("feishu", "Title", text, secret=FEISHU_SECRET)
    assert len(orjson.dumps(body)) <= 20_000
    assert body["content"]["post"]["zh_cn"]["content"][0][0]["text"].endswith("…")


def test_slack_header_and_section_are_cut_to_their_limits() -> None:
    body, _ = chat_body("slack", "T" * 400, "😀" * 5000)
    header, section = body["blocks"]
    assert len(header["text"]["text"]) <= 150
    # counted in UTF-16 units, so an emoji counts twice and the cut is never over the limit
    assert len(section["text"]["text"].encode("utf-16-le")) // 2 <= 3000
    assert len(body["text"].encode("utf-16-le")) // 2 <= 3000


def test_slack_leaves_out_empty_blocks() -> None:
    body, _ = chat_body("slack", "", "only text")
    assert body == {
        "text": "only text",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "only text"}}],
    }


# sending ---------------------------------------------------------------------------------------


async def test_dingtalk_send_signs_in_the_query_and_keeps_the_token() -> None:
    seen: list[httpx.Request] = []
    bare = DINGTALK.split("?")[0]
    sender = sender_for(answer({"errcode": 0, "errmsg": "ok"}), seen, {bare: DING_SECRET})
    await sender.send(DINGTALK, None, "Renewal due", "Contract C-1 renews soon.")

    [request] = seen
    assert request.method == "POST"
    assert request.url.host == "oapi.dingtalk.com"
    assert request.url.path == "/robot/send"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "Upkeep-Notifier/1"
    query = request.url.params
    assert list(query.keys()) == ["access_token", "timestamp", "sign"]
    assert query["access_token"] == "ding-token-123"
    timestamp = query["timestamp"]
    mac = hmac.new(DING_SECRET.encode(), f"{timestamp}\n{DING_SECRET}".encode(), hashlib.sha256)
    expected = base64.b64encode(mac.digest()).decode()
    assert query["sign"] == expected
    # on the wire the Base64 signature is URL-encoded exactly once
    assert f"sign={quote(expected, safe='')}".encode() in request.url.query
    assert orjson.loads(request.content) == {
        "msgtype": "markdown",
        "markdown": {
            "title": "Renewal due",
            "text": "#### Renewal due\n\nContract C-1 renews soon.",
        },
    }


async def test_a_secret_can_be_keyed_by_the_full_url() -> None:
    seen: list[httpx.Request] = []
    sender = sender_for(answer({"code": 0, "msg": "success"}), seen, {FEISHU: FEISHU_SECRET})
    await sender.send(FEISHU, "feishu", "t", "x")
    body = orjson.loads(seen[0].content)
    mac = hmac.new(f"{body['timestamp']}\n{FEISHU_SECRET}".encode(), b"", hashlib.sha256)
    assert body["sign"] == base64.b64encode(mac.digest()).decode()


async def test_a_bot_without_a_secret_is_sent_unsigned() -> None:
    seen: list[httpx.Request] = []
    sender = sender_for(answer({"errcode": 0, "errmsg": "ok"}), seen, {"https://other/": "s"})
    await sender.send(DINGTALK, "dingtalk", "t", "x")
    assert str(seen[0].url) == DINGTALK


@pytest.mark.parametrize(
    ("url", "reply"),
    [
        (DINGTALK, httpx.Response(200, json={"errcode": 0, "errmsg": "ok"})),
        (WECOM, httpx.Response(200, json={"errcode": 0, "errmsg": "ok"})),
        (FEISHU, httpx.Response(200, json={"code": 0, "msg": "success", "data": {}})),
        (FEISHU, httpx.Response(200, json={"StatusCode": 0, "StatusMessage": "success"})),
        (SLACK, httpx.Response(200, text="ok")),
    ],
)
async def test_accepted_messages(url: str, reply: httpx.Response) -> None:
    seen: list[httpx.Request] = []
    await sender_for(lambda _: reply, seen).send(url, None, "t", "x")
    assert len(seen) == 1
    assert str(seen[0].url) == url


@pytest.mark.parametrize(
    ("url", "reply", "reason", "retry_after"),
    [
        (DINGTALK, {"errcode": 130101, "errmsg": "send too fast"}, "dingtalk_130101", 600.0),
        (WECOM, {"errcode": 45009, "errmsg": "api freq out of limit"}, "wecom_45009", 60.0),
        (WECOM, {"errcode": 45033, "errmsg": "api concurrent out of limit"}, "wecom_45033", None),
        (FEISHU, {"code": 11232, "msg": "frequency limited"}, "feishu_11232", None),
    ],
)
async def test_platform_rate_limits_are_transient(
    url: str, reply: dict[str, Any], reason: str, retry_after: float | None
) -> None:
    error = await failure(url, answer(reply))
    assert isinstance(error, TransientDeliveryError)
    assert (error.reason, error.retry_after) == (reason, retry_after)
    assert str(reply.get("errmsg") or reply.get("msg")) in error.detail


@pytest.mark.parametrize(
    ("url", "reply", "status", "reason"),
    [
        (DINGTALK, {"errcode": 310000, "errmsg": "sign not match"}, 200, "dingtalk_310000"),
        (DINGTALK, {"errcode": 300001, "errmsg": "token is not exist"}, 200, "dingtalk_300001"),
        (WECOM, {"errcode": 93000, "errmsg": "invalid webhook url"}, 200, "wecom_93000"),
        (FEISHU, {"code": 19021, "msg": "sign match fail"}, 200, "feishu_19021"),
        (FEISHU, {"code": 9499, "msg": "Bad Request"}, 400, "feishu_9499"),
    ],
)
async def test_other_platform_errors_are_permanent(
    url: str, reply: dict[str, Any], status: int, reason: str
) -> None:
    error = await failure(url, answer(reply, status))
    assert isinstance(error, PermanentDeliveryError)
    assert error.reason == reason


@pytest.mark.parametrize("url", [DINGTALK, WECOM, FEISHU])
@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(200, text="<html>proxy</html>"),
        httpx.Response(200, json={"ok": True}),
        httpx.Response(200, json=[0]),
        httpx.Response(200, json={"errcode": "0", "code": "0"}),
    ],
)
async def test_an_answer_without_the_platform_verdict_is_permanent(
    url: str, reply: httpx.Response
) -> None:
    error = await failure(url, lambda _: reply)
    assert isinstance(error, PermanentDeliveryError)
    assert error.reason == "invalid_response"


@pytest.mark.parametrize("url", [DINGTALK, WECOM, FEISHU, SLACK])
async def test_http_failures_map_as_for_webhooks(url: str) -> None:
    error = await failure(url, lambda _: httpx.Response(429, headers={"Retry-After": "30"}))
    assert isinstance(error, TransientDeliveryError)
    assert (error.reason, error.retry_after) == ("http_429", 30.0)

    error = await failure(url, lambda _: httpx.Response(503, json={"errcode": 0, "code": 0}))
    assert isinstance(error, TransientDeliveryError)
    assert error.reason == "http_503"

    error = await failure(url, lambda _: httpx.Response(404, text="Not Found"))
    assert isinstance(error, PermanentDeliveryError)
    assert error.reason == "http_404"

    error = await failure(url, lambda _: httpx.Response(302, headers={"Location": "/x"}))
    assert isinstance(error, PermanentDeliveryError)
    assert error.reason == "http_302"

    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    error = await failure(url, hang)
    assert isinstance(error, TransientDeliveryError)
    assert error.reason == "timeout"

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    error = await failure(url, refuse)
    assert isinstance(error, TransientDeliveryError)
    assert error.reason == "connect_error"


@pytest.mark.parametrize(
    ("status", "word"),
    [
        (400, "invalid_payload"),
        (403, "action_prohibited"),
        (404, "no_service"),
        (410, "channel_is_archived"),
    ],
)
async def test_slack_client_errors_are_permanent_with_slacks_word(status: int, word: str) -> None:
    error = await failure(SLACK, lambda _: httpx.Response(status, text=word))
    assert isinstance(error, PermanentDeliveryError)
    assert error.reason == f"http_{status}"
    assert word in error.detail


async def test_an_unknown_platform_is_permanent_and_sends_nothing() -> None:
    seen: list[httpx.Request] = []
    sender = sender_for(answer({}), seen)
    with pytest.raises(PermanentDeliveryError) as caught:
        await sender.send("https://chat.example.com/hook?key=k", None, "t", "x")
    assert caught.value.reason == "unknown_chat_platform"
    assert "key=k" not in str(caught.value)
    with pytest.raises(PermanentDeliveryError):
        await sender.send(SLACK, "teams", "t", "x")  # type: ignore[arg-type]
    assert seen == []


async def test_the_platform_argument_wins_over_the_host() -> None:
    seen: list[httpx.Request] = []
    sender = sender_for(lambda _: httpx.Response(200, text="ok"), seen)
    await sender.send("https://93.184.216.34/slack-compatible", "slack", "t", "x")
    assert orjson.loads(seen[0].content)["blocks"][0]["type"] == "header"


async def test_a_private_bot_address_is_refused_unless_allowed() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"errcode": 0})

    sender = ChatSender(
        httpx.AsyncClient(transport=httpx.MockTransport(record)), {}, allow_private=False
    )
    with pytest.raises(PermanentDeliveryError) as caught:
        await sender.send("http://127.0.0.1:9000/robot/send", "dingtalk", "t", "x")
    assert caught.value.reason == "forbidden_address"
    assert seen == []
