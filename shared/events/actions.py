"""The action contract on ``upkeep.actions.v1``: what rules ask the notifier to deliver.

One JSON object per action, keyed by subject. ``key`` identifies the occurrence (the same
renewal reminder, birthday or alert always has the same key), which is what the notifier's
ledger de-duplicates on: an action published twice is delivered once.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

ACTION_TYPE = "upkeep.action.v1"


class ActionRecipient(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["customer", "channel", "staff"]
    id: str = Field(min_length=1, max_length=128)


class ActionMessage(BaseModel):
    """An action as published; the schema is generated into ``docs/schemas``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["upkeep.action.v1"] = "upkeep.action.v1"
    key: str = Field(min_length=1, max_length=300)
    rule: str
    subject: str
    kind: Literal["email", "chat", "webhook", "task"]
    recipient: ActionRecipient
    template: str
    locale: str
    due_at: AwareDatetime
    priority: Literal["transactional", "marketing"] = "transactional"
    data: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, str] = Field(
        default_factory=dict,
        description="whom the subject belonged to when the action was decided: owner, channel, "
        "tier (for reporting; analytics attributes the action and its outcome by it)",
    )
    created_at: AwareDatetime
