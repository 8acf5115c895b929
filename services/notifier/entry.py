"""A ledger entry: one action on its way to its recipient, and the changes of its state.

``pending`` (to be tried at ``next_at``) → ``sent`` | ``suppressed`` | ``failed``. Every change
goes through a method here, so what a state means (which fields it sets, whether its outcome is
still to publish) is written once. A final state sets ``unpublished``: its outcome goes out in
the dispatcher's next transaction, and the flag is cleared once that commits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel

from shared.events.actions import ActionMessage

State = Literal["pending", "sent", "suppressed", "failed"]
FINAL: tuple[State, ...] = ("sent", "suppressed", "failed")


class Entry(BaseModel):
    key: str
    action: ActionMessage
    partition: int
    offset: int
    state: State = "pending"
    next_at: AwareDatetime
    attempts: int = 0
    deferrals: int = 0
    reason: str | None = None  # why it was suppressed, failed or last deferred
    detail: str | None = None
    sent_at: AwareDatetime | None = None
    unpublished: bool = False  # a final state whose outcome is not yet on the deliveries topic
    created_at: AwareDatetime
    updated_at: AwareDatetime | None = None
    digest_id: str | None = None  # the daily digest this entry is folded into, if any

    @property
    def recipient(self) -> str:
        return f"{self.action.recipient.kind}:{self.action.recipient.id}"

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def sent(self, now: datetime) -> None:
        """The provider accepted it (one more attempt)."""
        self.attempts += 1
        self._finish("sent", None, now)
        self.sent_at = now

    def suppress(self, reason: str, now: datetime) -> None:
        """Not to be sent: an unsubscribe, a preference, a cap, a suppressed address."""
        self._finish("suppressed", reason, now)

    def fail(self, reason: str, now: datetime, detail: str | None = None) -> None:
        """Given up: a permanent error, retries exhausted, no recipient."""
        self._finish("failed", reason, now)
        if detail is not None:
            self.detail = detail[:300] or None

    def defer(self, until: datetime, reason: str, now: datetime) -> bool:
        """Try again at ``until``; returns whether the reason is new (worth announcing: an
        entry waiting for its contact does not announce every look)."""
        announce = self.reason != reason
        self.next_at, self.reason, self.deferrals = until, reason, self.deferrals + 1
        self.updated_at = now
        return announce

    def retry(self, until: datetime, reason: str, now: datetime, detail: str | None) -> None:
        """A transient failure: one more attempt counted, the next at ``until``."""
        self.attempts += 1
        self.detail = (detail or "")[:300] or None
        self.defer(until, reason, now)

    def _finish(self, state: State, reason: str | None, now: datetime) -> None:
        self.state, self.reason, self.unpublished, self.updated_at = state, reason, True, now
