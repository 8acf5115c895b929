"""A channel (distributor, partner) is a recipient like a customer: ``channel.upserted`` gives
the directory a contact ``channel:<id>``, and an e-mail to a recipient of kind ``channel``
reaches that address (transactional unless the action says marketing)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from services.notifier.directory import contact_from
from shared.events.envelope import CanonicalEvent
from shared.events.types import ChannelUpserted
from shared.kafka.messages import StoredRecord
from tests.unit.notifier.dispatch_world import (
    EVENTS,
    OFFSETS,
    T0,
    TEMPLATES,
    action,
    make_world,
    record,
    summary,
)


def channel_event(channel_id: str = "CH-1", **extra: Any) -> CanonicalEvent:
    payload = ChannelUpserted.model_validate(
        {
            "channel_id": channel_id,
            "name": "杭州西湖经销商",
            "timezone": "Asia/Shanghai",
            "locale": "zh-CN",
            "email": "orders@xihu-distributor.example.com",
            "manager_id": "S-1",
            **extra,
        }
    )
    return CanonicalEvent.build(
        event_id=f"channel-{channel_id}-{uuid.uuid4().hex[:6]}",
        source="test",
        payload=payload,
        time=T0 - timedelta(days=1),
        source_offset="Z",
    )


def as_record(event: CanonicalEvent) -> StoredRecord:
    return StoredRecord(EVENTS, 0, next(OFFSETS), event.to_json(), event.subject.encode())


def check_in(key: str, priority: str = "transactional") -> dict[str, Any]:
    data = TEMPLATES.sample("channel_inactive")
    return action(
        key,
        "CH-1",
        recipient_kind="channel",
        template="channel_inactive",
        priority=priority,
        data=data,
    )


def test_a_channel_profile_is_a_contact() -> None:
    event = channel_event(active=False)
    contact = contact_from(event, event.payload())
    assert contact is not None
    assert (contact.id, contact.name, contact.email) == (
        "channel:CH-1",
        "杭州西湖经销商",
        "orders@xihu-distributor.example.com",
    )
    assert (contact.locale, contact.timezone, contact.active) == ("zh-CN", "Asia/Shanghai", False)
    assert contact.updated_at == event.time


async def test_a_channel_check_in_is_mailed_to_the_channel_transactional_unless_marketing() -> None:
    w = make_world()
    await w.consume(as_record(channel_event()))
    await w.consume(
        record(check_in("checkin:CH-1:1")), record(check_in("promo:CH-1:1", "marketing"))
    )
    assert summary(await w.tick()) == [
        ("checkin:CH-1:1", "sent", None),
        ("promo:CH-1:1", "sent", None),
    ]
    mails = {m["X-Upkeep-Key"]: (m, to) for m, to in w.mail.delivered}
    checkin, to = mails["checkin:CH-1:1"]
    assert to == "orders@xihu-distributor.example.com"
    assert checkin["List-Unsubscribe"] is None
    promo, _ = mails["promo:CH-1:1"]
    assert "r=channel%3ACH-1" in str(promo["List-Unsubscribe"])


async def test_an_inactive_channel_gets_nothing() -> None:
    w = make_world()
    await w.consume(as_record(channel_event(active=False)))
    await w.consume(record(check_in("checkin:CH-1:1")))
    assert summary(await w.tick()) == [("checkin:CH-1:1", "suppressed", "inactive_recipient")]
    assert w.mail.delivered == []
