"""The action contract on ``upkeep.actions.v1``: what rules ask the notifier to deliver.

One JSON object per action, keyed by subject. ``key`` identifies the occurrence (the same
renewal reminder, birthday or alert always has the same key), which is what the notifier's
ledger de-duplicates on: an action published twice is delivered once.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

ACTION_TYPE = "upkeep.action.v1"


class ContractTerm(BaseModel):
    """The contract term an action is about: analytics counts each term's reminders and
    renewals once, whichever rule or reminder speaks of it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    contract_id: str = Field(min_length=1, max_length=128)
    end_date: date


PURPOSE_DESCRIPTION = (
    "what maintenance the action does, for reporting (e.g. follow_up, renewal_reminder, "
    "channel_alert, greeting, churn_alert): analytics counts by it, never by rule name"
)


class TaskSpec(BaseModel):
    """What makes an action of kind ``task`` a task: when it is due (not when it is created:
    that is the action's ``due_at``), how urgent it is and the owner's team."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    due_at: AwareDatetime
    priority: Literal["low", "normal", "high", "urgent"] = "normal"
    team: str | None = Field(None, max_length=128)


class ActionRecipient(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["customer", "channel", "staff"]
    id: str = Field(min_length=1, max_length=128)


class Attachment(BaseModel):
    """A file an e-mail carries: text (sent as UTF-8), named, of one of a few media types."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    filename: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    media_type: Literal["text/csv", "text/plain", "application/json"]
    content: str = Field(max_length=500_000, description="the file's text, sent as UTF-8")


ATTACHMENTS_DESCRIPTION = (
    "files to attach (at most 5): only e-mail delivers them; chat, webhook and task "
    "channels ignore them"
)


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
    purpose: str | None = Field(None, max_length=64, description=PURPOSE_DESCRIPTION)
    term: ContractTerm | None = Field(None, description="the contract term it is about, if any")
    task: TaskSpec | None = Field(None, description="for kind task: its due time and priority")
    attachments: list[Attachment] = Field(
        default_factory=list, max_length=5, description=ATTACHMENTS_DESCRIPTION
    )
    created_at: AwareDatetime
