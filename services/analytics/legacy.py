"""Actions and outcomes published before they carried ``purpose`` and ``term``.

Such records stay on the topics for the whole replay horizon (a rebuild of analytics reads
them), so what they count for is derived here once, from the built-in rules' names and key
formats as they were when those records were written — the only place analytics knows a rule
by name or reads a key. A record that carries ``purpose`` is never read here.
"""

from __future__ import annotations

import re
from datetime import date

from shared.events.actions import ContractTerm

# the purposes the built-in rules' actions had, by rule name
PURPOSES = {
    "followup": "follow_up",
    "channel-health": "channel_alert",
    "birthday": "greeting",
    "churn": "churn_alert",
    "renewal": "renewal_reminder",
}
# renewal:<contract>:<end date>:<which>[:customer] (a contract id may itself contain ":")
RENEWAL_KEY = re.compile(r"^renewal:(?P<contract>.+):(?P<end>\d{4}-\d{2}-\d{2}):[^:]+(:customer)?$")


def purpose_of(rule: str) -> str | None:
    return PURPOSES.get(rule)


def term_of(rule: str, key: str) -> ContractTerm | None:
    """The contract term a renewal action's key was about."""
    found = RENEWAL_KEY.match(key) if rule == "renewal" else None
    if found is None:
        return None
    try:
        return ContractTerm(
            contract_id=found["contract"], end_date=date.fromisoformat(found["end"])
        )
    except ValueError:
        return None
