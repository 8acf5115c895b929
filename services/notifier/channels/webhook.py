"""Webhooks signed as Standard Webhooks (https://www.standardwebhooks.com/) describe them.

The body is signed with HMAC-SHA256 over ``{webhook-id}.{webhook-timestamp}.{body}``; the
``webhook-signature`` header carries one ``v1,<base64>`` signature per secret, space-separated,
so that during a rotation the old and the new secret both sign and a receiver holding either
verifies. Secrets are ``whsec_<base64 key>`` (a secret without the prefix is read as base64 too).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from services.notifier.channels.base import Delivery
from services.notifier.channels.guard import check_destination
from services.notifier.channels.http import post_json
from services.notifier.directory import Contact
from services.notifier.errors import PermanentDeliveryError

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret


def _key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret must be whsec_ followed by base64") from None


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one message under one secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per secret, space-separated."""
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: int = 300,
    now: int | None = None,
) -> bool:
    """Whether ``headers`` carry a ``v1`` signature of ``body`` under ``secret`` and a timestamp
    within ``tolerance_s`` of ``now``: what a receiver checks (and what the tests check)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature")
    if msg_id is None or signatures is None or not (stamp.isascii() and stamp.isdigit()):
        return False
    timestamp = int(stamp)
    if abs((int(time.time()) if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, msg_id, timestamp, body).encode()
    return any(
        hmac.compare_digest(candidate.encode(), expected)
        for candidate in signatures.split()
        if candidate.startswith("v1,")
    )


class WebhookSender:
    """Delivers webhook actions: one signed POST per call of :meth:`send`.

    The dispatcher calls :meth:`send` once per attempt, with the action's id as ``msg_id``: the
    id stays the same across retries (receivers deduplicate on it) while the timestamp and the
    signatures are fresh each time. ``secrets`` are the endpoint's secrets, newest first; ids are
    ours and must not contain ``.``.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        secrets: Sequence[str],
        *,
        allow_private: bool,
        timeout_s: float = 10.0,
    ) -> None:
        if not secrets:
            raise ValueError("a webhook needs at least one signing secret")
        for secret in secrets:
            _key(secret)  # a malformed secret fails at start-up, not at the first delivery
        self._client = client
        self._secrets = tuple(secrets)
        self._allow_private = allow_private
        self._timeout_s = timeout_s

    async def send(self, url: str, msg_id: str, payload: Mapping[str, Any]) -> int:
        """POST ``payload`` to ``url``; return the (2xx) status or raise a delivery error."""
        await check_destination(url, allow_private=self._allow_private)
        try:
            body = orjson.dumps(payload)
        except orjson.JSONEncodeError as exc:
            raise PermanentDeliveryError("invalid_payload", str(exc)) from None
        timestamp = int(time.time())
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(self._secrets, msg_id, timestamp, body),
        }
        reply = await post_json(self._client, url, body, headers=headers, timeout_s=self._timeout_s)
        return reply.status


class WebhookChannel:
    """Delivers ``webhook`` actions to the one endpoint configured
    (``UPKEEP_NOTIFIER_WEBHOOK_URL``): the action and its rendered message, signed, with the
    action's key as ``webhook-id``."""

    kind, needs_contact, concurrency = "webhook", False, 8

    def __init__(self, sender: WebhookSender | None, url: str | None) -> None:
        self._sender, self._url = sender, url

    def provider(self, contact: Contact | None) -> str | None:
        return f"webhook:{urlsplit(self._url).hostname}" if self._url else None

    async def send(self, delivery: Delivery) -> None:
        if not self._url or self._sender is None:
            raise PermanentDeliveryError("no_webhook_endpoint", "UPKEEP_NOTIFIER_WEBHOOK_URL")
        payload = {
            "action": delivery.action.model_dump(mode="json", exclude={"attachments"}),
            "message": {"subject": delivery.rendered.subject, "text": delivery.rendered.text},
        }
        await self._sender.send(self._url, delivery.key, payload)
