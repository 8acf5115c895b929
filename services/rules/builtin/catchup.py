"""Late rather than never: the settings every rule that plans at a wall-clock time shares."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field


class CatchUp(BaseModel):
    """A moment that passed less than ``catch_up_hours`` ago when it is planned is still
    planned (and fires at once): a contract entered at 10:00 still gets today's 09:00
    reminder, a customer entered on their birthday is still greeted."""

    model_config = ConfigDict(extra="forbid")  # a typo in rules.yaml is an error

    catch_up_hours: float = Field(default=12, ge=0, le=23)

    def plan_after(self, now: datetime) -> datetime:
        """Plan moments strictly after this one."""
        return now - timedelta(hours=self.catch_up_hours)
