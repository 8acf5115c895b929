"""What every channel is to the dispatcher: a kind, a provider to protect, one ``send``.

The dispatcher never branches on an action's kind: it looks the channel up by kind, asks it
which provider an attempt goes to (its circuit breaker and its gate, as many concurrent sends
as :attr:`Channel.concurrency`), and hands it a :class:`Delivery`. A channel makes one attempt
per call and reports failure by raising
:class:`~services.notifier.errors.TransientDeliveryError` or
:class:`~services.notifier.errors.PermanentDeliveryError`; retrying is the dispatcher's business.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.notifier.directory import Contact
from services.notifier.templates import Rendered
from shared.events.actions import ActionMessage


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt's message and where it goes."""

    key: str  # the action's key: the message's stable id (Message-ID, webhook-id, task id)
    action: ActionMessage
    contact: Contact | None
    rendered: Rendered
    now: datetime
    unsubscribe_url: str | None = None


class Channel(Protocol):
    @property
    def kind(self) -> str:
        """The action kind it delivers (``email``, ``chat``, ``webhook``, ``task``)."""
        ...

    @property
    def needs_contact(self) -> bool:
        """Whether it needs the recipient's contact (an address, a bot) to send at all."""
        ...

    @property
    def concurrency(self) -> int:
        """How many sends to one provider may be in flight at once."""
        ...

    def provider(self, contact: Contact | None) -> str | None:
        """The provider an attempt to ``contact`` goes to (its breaker's and gate's name), or
        None when there is none to protect (e.g. our own task store)."""
        ...

    async def send(self, delivery: Delivery) -> None: ...


def by_kind(channels: Iterable[Channel]) -> Mapping[str, Channel]:
    found: dict[str, Channel] = {}
    for channel in channels:
        if channel.kind in found:
            raise ValueError(f"two channels deliver {channel.kind!r}")
        found[channel.kind] = channel
    return found
