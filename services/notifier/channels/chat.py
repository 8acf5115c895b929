"""Chat bots reached through their incoming webhooks: DingTalk and WeCom group robots, Feishu/Lark
custom bots, Slack incoming webhooks.

:func:`chat_body` builds each platform's message (title and markdown text, cut to the platform's
documented limits) and its signature where the bot has a signing secret; :class:`ChatSender`
posts it and reads the platform's own verdict: DingTalk, WeCom and Feishu answer errors inside
a JSON body (``errcode`` / ``code``), Slack with the HTTP status.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, assert_never, get_args
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from services.notifier.channels.base import Delivery
from services.notifier.channels.guard import check_destination
from services.notifier.channels.http import Reply, origin, send_json, status_error
from services.notifier.directory import Contact
from services.notifier.errors import PermanentDeliveryError, TransientDeliveryError

Platform = Literal["dingtalk", "wecom", "feishu", "slack"]
PLATFORMS: tuple[Platform, ...] = get_args(Platform)

_HOSTS: dict[str, Platform] = {
    "oapi.dingtalk.com": "dingtalk",
    "qyapi.weixin.qq.com": "wecom",
    "open.feishu.cn": "feishu",
    "open.larksuite.com": "feishu",
    "hooks.slack.com": "slack",
}

# Documented limits. DingTalk: message content up to 20,000 bytes; WeCom: markdown content up to
# 4,096 UTF-8 bytes; Feishu: request body up to 20 KB; Slack: header text 150 characters, section
# text 3,000 characters. Titles have no documented limit; ours keeps them to a line.
DINGTALK_TEXT_BYTES = 20_000
WECOM_CONTENT_BYTES = 4096
FEISHU_BODY_BYTES = 20_000
SLACK_HEADER_CHARS = 150
SLACK_TEXT_CHARS = 3000
TITLE_CHARS = 100
ELLIPSIS = "…"

# Platform error codes worth retrying (rate limits), with the wait the platform documents.
_RATE_LIMITED: dict[tuple[Platform, int], float | None] = {
    ("dingtalk", 130101): 600.0,  # over 20 messages a minute: throttled for 10 minutes
    ("wecom", 45009): 60.0,  # over 20 messages a minute
    ("wecom", 45033): None,  # too many concurrent calls
    ("feishu", 11232): None,  # over the bot's message frequency limit
}


def detect_platform(url: str) -> Platform | None:
    """The platform a bot's webhook URL belongs to, by host; ``None`` for any other host."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return _HOSTS.get(host or "")


def chat_body(
    platform: Platform,
    title: str,
    text: str,
    *,
    secret: str | None = None,
    now_ms: int | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The JSON body of one message and the query parameters to add to the bot's URL.

    With ``secret``, DingTalk is signed in the query (``timestamp`` in milliseconds and ``sign``)
    and Feishu in the body (``timestamp`` in seconds and ``sign``); WeCom and Slack have no
    signing. Query values are returned as they are: the HTTP client URL-encodes them once, which
    is the encoding DingTalk expects of ``sign``.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    title = _fit(" ".join(title.split()), TITLE_CHARS, len)
    match platform:
        case "dingtalk":
            heading = f"#### {title}\n\n"
            budget = DINGTALK_TEXT_BYTES - _utf8_len(heading)
            markdown = {"title": title, "text": heading + _fit(text, budget, _utf8_len)}
            params = {} if secret is None else _dingtalk_signature(secret, now_ms)
            return {"msgtype": "markdown", "markdown": markdown}, params
        case "wecom":
            content = _fit(f"#### {title}\n\n{text}", WECOM_CONTENT_BYTES, _utf8_len)
            return {"msgtype": "markdown", "markdown": {"content": content}}, {}
        case "feishu":
            return _feishu_body(title, text, secret, now_ms // 1000), {}
        case "slack":
            blocks: list[dict[str, Any]] = []
            if title:
                header = {"type": "plain_text", "text": _fit(title, SLACK_HEADER_CHARS, _utf16_len)}
                blocks.append({"type": "header", "text": header})
            if text.strip():
                section = {"type": "mrkdwn", "text": _fit(text, SLACK_TEXT_CHARS, _utf16_len)}
                blocks.append({"type": "section", "text": section})
            fallback = _fit(f"{title}\n{text}".strip(), SLACK_TEXT_CHARS, _utf16_len)
            return {"text": fallback, "blocks": blocks}, {}
        case _:
            assert_never(platform)


class ChatSender:
    """Delivers chat actions: one message to one bot per call of :meth:`send`.

    ``secrets`` are the bots' signing secrets, keyed by webhook URL without its query string
    (or by the full URL); a bot without one is sent unsigned.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        secrets: Mapping[str, str],
        *,
        allow_private: bool,
        timeout_s: float = 10.0,
    ) -> None:
        self._client = client
        self._secrets = dict(secrets)
        self._allow_private = allow_private
        self._timeout_s = timeout_s

    async def send(self, url: str, platform: Platform | None, title: str, text: str) -> None:
        """Post ``title`` and ``text`` to the bot at ``url`` (its platform as given, else from the
        host); return when the platform accepted it, else raise a delivery error."""
        where = origin(url)
        platform = platform or detect_platform(url)
        if platform is None or platform not in PLATFORMS:
            raise PermanentDeliveryError("unknown_chat_platform", where)
        await check_destination(url, allow_private=self._allow_private)
        body, params = chat_body(platform, title, text, secret=self._secret_for(url))
        reply = await send_json(
            self._client, url, orjson.dumps(body), params=params, timeout_s=self._timeout_s
        )
        _check_reply(platform, reply, where)

    def _secret_for(self, url: str) -> str | None:
        if url in self._secrets:
            return self._secrets[url]
        try:
            bare = urlunsplit(urlsplit(url)._replace(query="", fragment=""))
        except ValueError:
            return None
        return self._secrets.get(bare)


class ChatChannel:
    """Delivers ``chat`` actions to the recipient's bot (its contact's ``chat_webhook_url``)."""

    kind, needs_contact, concurrency = "chat", True, 8

    def __init__(self, sender: ChatSender) -> None:
        self._sender = sender

    def provider(self, contact: Contact | None) -> str | None:
        if contact is None or not contact.chat_webhook_url:
            return None
        return f"chat:{urlsplit(contact.chat_webhook_url).hostname}"

    async def send(self, delivery: Delivery) -> None:
        contact = delivery.contact
        if contact is None or not contact.chat_webhook_url:
            raise PermanentDeliveryError("no_chat_webhook", "the recipient has no chat bot")
        await self._sender.send(
            contact.chat_webhook_url,
            contact.chat_platform,  # type: ignore[arg-type]  # an unknown one is refused there
            delivery.rendered.subject,
            delivery.rendered.text,
        )


def _check_reply(platform: Platform, reply: Reply, where: str) -> None:
    if reply.status >= 500 or reply.status in (408, 429):  # busy or down, whatever the body says
        _raise_for_status(reply, where)
    if platform == "slack":
        _raise_for_status(reply, where, note=_slack_error(reply.body))
        return
    field = "code" if platform == "feishu" else "errcode"
    code, message = _platform_result(reply.body, field)
    if code is None:
        _raise_for_status(reply, where)
        raise PermanentDeliveryError(
            "invalid_response", f"{where} answered {reply.status} without {field}"
        )
    if code != 0:
        reason = f"{platform}_{code}"
        detail = f"{where}: {message}" if message else where
        if (platform, code) in _RATE_LIMITED:
            raise TransientDeliveryError(reason, detail, retry_after=_RATE_LIMITED[platform, code])
        raise PermanentDeliveryError(reason, detail)
    _raise_for_status(reply, where)


def _raise_for_status(reply: Reply, where: str, note: str = "") -> None:
    error = status_error(reply, where, note)
    if error is not None:
        raise error


def _platform_result(body: bytes, field: str) -> tuple[int | None, str]:
    """The error code a JSON reply carries in ``field`` and its message (cut short)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, ""
    if not isinstance(data, dict):
        return None, ""
    code = data.get(field, data.get("StatusCode") if field == "code" else None)
    if not isinstance(code, int) or isinstance(code, bool):
        return None, ""
    message = data.get("errmsg") or data.get("msg") or ""
    return code, str(message)[:200]


def _slack_error(body: bytes) -> str:
    """Slack's error word (``invalid_payload``, ``no_service``...), if that is what ``body`` is."""
    text = body.decode("utf-8", "replace").strip()
    return text if re.fullmatch(r"[a-z_]{1,64}", text) else ""


def _dingtalk_signature(secret: str, now_ms: int) -> dict[str, str]:
    digest = hmac.new(secret.encode(), f"{now_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return {"timestamp": str(now_ms), "sign": base64.b64encode(digest).decode("ascii")}


def _feishu_body(title: str, text: str, secret: str | None, now_s: int) -> dict[str, Any]:
    signature: dict[str, str] = {}
    if secret is not None:
        key = f"{now_s}\n{secret}".encode()
        digest = hmac.new(key, b"", hashlib.sha256).digest()
        signature = {"timestamp": str(now_s), "sign": base64.b64encode(digest).decode("ascii")}

    def body(text: str) -> dict[str, Any]:
        post = {"zh_cn": {"title": title, "content": [[{"tag": "text", "text": text}]]}}
        return {**signature, "msg_type": "post", "content": {"post": post}}

    envelope = len(orjson.dumps(body("")))
    return body(_fit(text, FEISHU_BODY_BYTES - envelope, _json_len))


def _fit(text: str, limit: int, measure: Callable[[str], int]) -> str:
    """``text``, or its longest prefix that fits ``limit`` with an ellipsis after it."""
    if measure(text) <= limit:
        return text
    budget = limit - measure(ELLIPSIS)
    fits, too_long = 0, len(text)  # measure(text[:fits]) <= budget < measure(text[:too_long])
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if measure(text[:middle]) <= budget:
            fits = middle
        else:
            too_long = middle
    return text[:fits] + ELLIPSIS


def _utf8_len(text: str) -> int:
    return len(text.encode())


def _utf16_len(text: str) -> int:  # what a JavaScript-minded limit counts: never less than chars
    return len(text.encode("utf-16-le")) // 2


def _json_len(text: str) -> int:  # the bytes ``text`` takes inside a JSON body
    return len(orjson.dumps(text)) - 2
