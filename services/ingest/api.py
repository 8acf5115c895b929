"""``POST /v1/events``: the HTTP door for systems that cannot reach Kafka.

Each item is validated and normalised at once, so the caller learns about bad items in the
response; good items are published to the raw topic of their subject and acknowledged by Kafka
before the answer (202). From there they take the same path as events sent to Kafka directly,
which is where de-duplication happens: a client may safely retry a request whose events carry an
``id`` or a timestamp of their own (a bare snapshot with neither gets a fresh id each time).
"""

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.ingest import metrics
from services.ingest.decode import STRUCTURED_TYPES, decode_object
from services.ingest.normalise import NormaliseContext, normalise
from services.ingest.reasons import Reason, Rejection
from shared.apikeys import WRITE_EVENTS, ApiKeySpec, KeyRing, require_scope
from shared.errors import is_transient
from shared.events.envelope import CanonicalEvent
from shared.kafka.messages import Outgoing, canonical_message

Publish = Callable[[Sequence[Outgoing]], Awaitable[None]]
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HttpIngestConfig:
    raw_customer_topic: str
    raw_channel_topic: str
    max_body_bytes: int
    max_batch_items: int
    max_message_bytes: int
    context: NormaliseContext


class ItemError(BaseModel):
    index: int
    reason: str
    detail: str


class IngestResponse(BaseModel):
    accepted: list[str]
    errors: list[ItemError]


REQUEST_BODY = {
    "required": True,
    "content": {
        media: {
            "schema": {
                "oneOf": [
                    {"type": "object", "description": "one event"},
                    {"type": "array", "items": {"type": "object"}, "maxItems": 500},
                ]
            },
            "example": {
                "type": "customer.upserted",
                "customer_id": "C-1001",
                "name": "Li Wei",
                "timezone": "Asia/Shanghai",
                "birthday": "1988-02-29",
            },
        }
        for media in (
            "application/json",
            "application/cloudevents+json",
            "application/cloudevents-batch+json",
        )
    },
}


def events_router(config: HttpIngestConfig, keys: KeyRing, publish: Publish) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["events"])

    @router.post(
        "/events",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=IngestResponse,
        summary="Submit one event or a batch of events",
        openapi_extra={"requestBody": REQUEST_BODY},
        responses={
            400: {"description": "the body is not JSON"},
            401: {"description": "no or unknown API key"},
            403: {"description": "the key may not write events"},
            413: {"description": "body or batch too large"},
            422: {"model": IngestResponse, "description": "no item was valid"},
            503: {"description": "Kafka is unavailable; retry later"},
        },
    )
    async def submit(
        request: Request, _key: Annotated[ApiKeySpec, require_scope(keys, WRITE_EVENTS)]
    ) -> JSONResponse:
        body = await read_limited(request, config.max_body_bytes)
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            metrics.REJECTED.labels("http", Reason.INVALID_JSON.value).inc()
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"not valid JSON: {exc.msg}") from exc
        items = parsed if isinstance(parsed, list) else [parsed]
        if len(items) > config.max_batch_items:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"a batch holds at most {config.max_batch_items} events, got {len(items)}",
            )
        media = request.headers.get("content-type", "").lower()
        structured = media.startswith(STRUCTURED_TYPES)
        accepted, errors, messages = _normalise_items(items, structured, config)
        await publish_or_503(publish, messages)
        answer = IngestResponse(accepted=accepted, errors=errors)
        code = status.HTTP_202_ACCEPTED if accepted or not errors else 422
        return JSONResponse(answer.model_dump(), status_code=code)

    return router


def _normalise_items(
    items: list[Any], structured: bool, config: HttpIngestConfig
) -> tuple[list[str], list[ItemError], list[Outgoing]]:
    accepted: list[str] = []
    errors: list[ItemError] = []
    messages: list[Outgoing] = []
    for index, item in enumerate(items):
        try:
            size = len(orjson.dumps(item))
        except TypeError:  # nested deeper than any event is (orjson writes at most 254 levels)
            metrics.REJECTED.labels("http", Reason.INVALID_JSON.value).inc()
            detail = "nested too deeply to be an event"
            errors.append(ItemError(index=index, reason=Reason.INVALID_JSON.value, detail=detail))
            continue
        if size > config.max_message_bytes:
            metrics.REJECTED.labels("http", Reason.OVERSIZED.value).inc()
            detail = f"{size} bytes exceeds the {config.max_message_bytes} limit per event"
            errors.append(ItemError(index=index, reason=Reason.OVERSIZED.value, detail=detail))
            continue
        decoded = decode_object(item, structured=structured)
        try:
            event = (
                decoded if isinstance(decoded, Rejection) else normalise(decoded, config.context)
            )
        except Exception:  # a bug must not turn one bad item into a 500 for the whole batch
            log.exception("normalising an item failed", extra={"index": index})
            event = Rejection(Reason.INVALID_DATA, "the event could not be processed")
        if isinstance(event, Rejection):
            metrics.REJECTED.labels("http", event.reason.value).inc()
            errors.append(ItemError(index=index, reason=event.reason.value, detail=event.detail))
            continue
        topic = raw_topic(event, config.raw_customer_topic, config.raw_channel_topic)
        messages.append(canonical_message(topic, event))
        accepted.append(event.id)
        metrics.EVENTS.labels("http", getattr(decoded, "form", "unknown"), "accepted").inc()
    return accepted, errors, messages


def raw_topic(event: CanonicalEvent, customer_topic: str, channel_topic: str) -> str:
    """The raw topic of an event's subject (channels', or customers' for everything else)."""
    return channel_topic if event.subject.startswith("channel:") else customer_topic


async def publish_or_503(publish: Publish, messages: Sequence[Outgoing]) -> None:
    """Publish before answering; Kafka away is a 503 with Retry-After (the client resends)."""
    if not messages:
        return
    try:
        await publish(messages)
    except Exception as exc:
        if not is_transient(exc):
            raise
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "Kafka is unavailable; retry later",
            headers={"Retry-After": "5"},
        ) from exc


async def read_limited(request: Request, limit: int) -> bytes:
    too_large = HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"the body exceeds {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)
