"""One JSON POST for every HTTP channel, and what its outcome means.

:func:`send_json` makes the request and turns transport failures into delivery errors;
:func:`status_error` says what a response status means (Standard Webhooks' advice: 2xx is
success, 3xx is not followed and fails, 408/429/5xx are worth retrying, honouring
``Retry-After``, every other status is permanent); :func:`post_json` is both together.

Error details name only the destination's origin (``https://host:port``): a webhook's path and
query, and a chat bot's, often carry its token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx

from services.notifier.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError

USER_AGENT = "Upkeep-Notifier/1"
MAX_REPLY_BYTES = 64 * 1024  # read no more of a response than this; receivers are not ours


@dataclass(frozen=True, slots=True)
class Reply:
    """A response, read up to :data:`MAX_REPLY_BYTES` of its (decoded) body."""

    status: int
    headers: httpx.Headers
    body: bytes


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: the part that is safe to log and report."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(invalid address)"
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date (a date in
    the past means 0). ``None`` when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def status_error(reply: Reply, where: str, note: str = "") -> DeliveryError | None:
    """The error a non-2xx ``reply`` means, or ``None`` for 2xx. ``note`` is added to the detail
    (for example a platform's own short error text)."""
    status = reply.status
    if 200 <= status < 300:
        return None
    detail = f"{where} answered {status}" + (f" ({note})" if note else "")
    if status >= 500 or status in (408, 429):
        retry_after = parse_retry_after(reply.headers.get("retry-after"))
        return TransientDeliveryError(f"http_{status}", detail, retry_after=retry_after)
    return PermanentDeliveryError(f"http_{status}", detail)  # 3xx (not followed) and 4xx


async def send_json(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    timeout_s: float,
) -> Reply:
    """POST ``body`` as JSON to ``url`` (``params`` are added to the query it already has),
    without following redirects, within ``timeout_s`` in all. Transport failures raise; any
    status is returned."""
    where = origin(url)
    all_headers = {"content-type": "application/json", "user-agent": USER_AGENT, **(headers or {})}
    try:
        target = httpx.URL(url).copy_merge_params(dict(params)) if params else httpx.URL(url)
        request = client.build_request(
            "POST", target, content=body, headers=all_headers, timeout=timeout_s
        )
    except httpx.InvalidURL:
        raise PermanentDeliveryError("invalid_url", f"{where} is not a valid address") from None
    try:
        async with asyncio.timeout(timeout_s):
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                content = await _read_capped(response)
            finally:
                await response.aclose()
    except (httpx.TimeoutException, TimeoutError):
        raise TransientDeliveryError("timeout", f"{where} did not answer in time") from None
    except httpx.ConnectError as exc:
        raise TransientDeliveryError("connect_error", f"{where}: {type(exc).__name__}") from None
    except httpx.UnsupportedProtocol:
        raise PermanentDeliveryError("invalid_url", f"{where}: unsupported protocol") from None
    except httpx.RequestError as exc:
        raise TransientDeliveryError("transport_error", f"{where}: {type(exc).__name__}") from None
    return Reply(status=response.status_code, headers=response.headers, body=content)


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    timeout_s: float,
) -> Reply:
    """:func:`send_json`, raising :func:`status_error` for any status but 2xx."""
    reply = await send_json(client, url, body, headers=headers, params=params, timeout_s=timeout_s)
    error = status_error(reply, origin(url))
    if error is not None:
        raise error
    return reply


async def _read_capped(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_REPLY_BYTES:
            break
    return b"".join(chunks)[:MAX_REPLY_BYTES]
