"""``POST /v1/sources/{source}/webhook``: a SaaS platform's data push, taken as it is.

The source's mapping (``source: {http: <source>, verify: …}``) says how its pushes are signed;
the secrets are settings (``UPKEEP_INGEST_SOURCE_SECRETS``, per source, newest first: during a
rotation both verify). The signature is the credential: no API key is asked. A push is verified
(HMAC over what the scheme signs, a timestamp within the tolerance), mapped, normalised and
published to the raw topic of its subject before the answer (202), like ``POST /v1/events``.

**Replays.** The events' ids derive from the push's delivery id (its id header; without one, the
body), so a platform retrying a delivery produces the same events, which ingest's consumer
de-duplicates; the answer is 202 again, so the platform stops retrying.
"""

from __future__ import annotations

import base64
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from fastapi import APIRouter, HTTPException, Path, Request, status
from fastapi.responses import JSONResponse
from pydantic import SecretStr

from services.ingest import metrics
from services.ingest.api import (
    IngestResponse,
    ItemError,
    Publish,
    publish_or_503,
    raw_topic,
    read_limited,
)
from services.ingest.mapping import Verify
from services.ingest.normalise import NormaliseContext, normalise
from services.ingest.reasons import Rejection
from services.ingest.sources import MappedSources, map_record
from shared.kafka.messages import Outgoing, canonical_message


class Refused(Exception):
    """Verification failed: the reason (never the secret or the expected signature)."""


def _key(secret: str, scheme: Verify, preset: str | None) -> bytes:
    if preset == "standard-webhooks" and secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def sign(secret: str, scheme: Verify, body: bytes, timestamp: str = "", delivery: str = "") -> str:
    """The signature header's value a sender would send (tests, and senders of ours)."""
    resolved = scheme.resolved()
    content = {
        "body": body,
        "timestamp.body": f"{timestamp}.".encode() + body,
        "id.timestamp.body": f"{delivery}.{timestamp}.".encode() + body,
    }[resolved.signed]
    mac = hmac.new(_key(secret, resolved, scheme.preset), content, resolved.algorithm).digest()
    digest = base64.b64encode(mac).decode() if resolved.encoding == "base64" else mac.hex()
    return f"{resolved.prefix}{digest}"


def verify(
    scheme: Verify,
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    now: float,
) -> str | None:
    """Check a push; returns its delivery id (None when the scheme has none). Raises
    :class:`Refused`."""
    resolved = scheme.resolved()
    if not secrets:
        raise Refused("no secret is configured for this source")
    presented = headers.get(resolved.header.lower())
    if not presented:
        raise Refused(f"no {resolved.header} header")
    timestamp = ""
    if resolved.timestamp_header:
        timestamp = headers.get(resolved.timestamp_header.lower(), "")
        if not timestamp.isdigit():
            raise Refused(f"no {resolved.timestamp_header} header")
        if abs(now - int(timestamp)) > resolved.tolerance_s:
            raise Refused("the timestamp is outside the tolerance (a replayed or stale push)")
    delivery = headers.get(resolved.id_header.lower(), "") if resolved.id_header else ""
    if resolved.id_header and not delivery:
        raise Refused(f"no {resolved.id_header} header")
    candidates = presented.split() if resolved.prefix == "v1," else [presented.strip()]
    for secret in secrets:
        expected = sign(secret, scheme, body, timestamp, delivery)
        if any(hmac.compare_digest(expected, c) for c in candidates):
            return delivery or None
    raise Refused("the signature does not match")


def webhooks_router(
    sources: MappedSources,
    secrets: Mapping[str, Sequence[SecretStr]],
    publish: Publish,
    *,
    raw_customer_topic: str,
    raw_channel_topic: str,
    max_body_bytes: int,
    context: NormaliseContext,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["sources"])

    @router.post(
        "/sources/{source}/webhook",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=IngestResponse,
        summary="A platform's data push, mapped by the source's mapping",
        responses={
            401: {"description": "not signed, wrongly signed, or stale"},
            404: {"description": "no mapping for this source"},
            413: {"description": "body too large"},
            422: {"model": IngestResponse, "description": "the mapping cannot map the push"},
            503: {"description": "Kafka is unavailable; retry later"},
        },
    )
    async def push(
        request: Request,
        source: str = Path(max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$"),
    ) -> JSONResponse:
        mapping = sources.for_http(source)
        if mapping is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no mapping for source {source!r}")
        body = await read_limited(request, max_body_bytes)
        scheme = mapping.spec.source.verify or Verify()
        keys = [s.get_secret_value() for s in secrets.get(source, [])]
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            delivery = verify(scheme, keys, headers, body, clock())
        except Refused as exc:
            metrics.REJECTED.labels("http", "unverified").inc()
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from None
        where = f"{source}:{delivery}" if delivery else source
        mapped = map_record(mapping, body, None, where, identity=delivery)
        ctx = replace(context, default_timezone=mapping.spec.timezone or context.default_timezone)
        errors: list[ItemError] = []
        messages: list[Outgoing] = []
        accepted: list[str] = []
        events = [] if isinstance(mapped, Rejection) else mapped.events
        if isinstance(mapped, Rejection):
            errors.append(ItemError(index=0, reason=mapped.reason.value, detail=mapped.detail))
        for n, raw in enumerate(events):
            event = normalise(raw, ctx)
            if isinstance(event, Rejection):
                errors.append(ItemError(index=n, reason=event.reason.value, detail=event.detail))
                continue
            topic = raw_topic(event, raw_customer_topic, raw_channel_topic)
            messages.append(canonical_message(topic, event))
            accepted.append(event.id)
        for e in errors:
            metrics.REJECTED.labels("http", e.reason).inc()
        if errors:  # all of a push, or none of it: the platform sees why and may resend
            answer = IngestResponse(accepted=[], errors=errors)
            return JSONResponse(answer.model_dump(), status_code=422)
        await publish_or_503(publish, messages)
        metrics.EVENTS.labels("http", "mapped", "accepted").inc(len(accepted))
        answer = IngestResponse(accepted=accepted, errors=[])
        return JSONResponse(answer.model_dump(), status_code=status.HTTP_202_ACCEPTED)

    return router
