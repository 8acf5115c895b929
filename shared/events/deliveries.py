"""The outcome contract on ``upkeep.deliveries.v1``: what became of each action.

Every action ends with exactly one final outcome — ``sent``, ``suppressed`` or ``failed`` — and
may be preceded by ``deferred`` outcomes (quiet hours, an unknown recipient, a paused
provider, a transient failure to be retried). ``id`` is deterministic (the action key, the
outcome and, for deferrals, the new time), so an outcome published again after a crash carries
the same id and consumers count it once.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.events.actions import PURPOSE_DESCRIPTION, ActionRecipient, ContractTerm

DELIVERY_TYPE = "upkeep.delivery.v1"
Outcome = Literal["sent", "deferred", "suppressed", "failed"]


class DeliveryMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["upkeep.delivery.v1"] = "upkeep.delivery.v1"
    id: str
    key: str = Field(description="the action's idempotency key")
    outcome: Outcome
    reason: str | None = Field(None, description="why suppressed, deferred or failed")
    rule: str
    subject: str
    kind: Literal["email", "chat", "webhook", "task"]
    recipient: ActionRecipient
    priority: Literal["transactional", "marketing"]
    template: str
    attempts: int
    due_at: AwareDatetime
    at: AwareDatetime = Field(description="when this outcome was decided")
    next_at: AwareDatetime | None = Field(
        None, description="for a deferral: when it is tried again"
    )
    data: dict[str, Any] = Field(default_factory=dict, description="the action's template data")
    context: dict[str, str] = Field(
        default_factory=dict, description="the action's context: owner, channel, tier"
    )
    purpose: str | None = Field(None, max_length=64, description=PURPOSE_DESCRIPTION)
    term: ContractTerm | None = Field(None, description="the action's contract term, if any")
