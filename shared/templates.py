"""Where the message templates live, for the two services that care: the notifier renders them,
the rules service refuses to start when a rule uses one that is not there.

A template is a folder ``<root>/<name>/<locale>/`` (see :mod:`services.notifier.templates`).
Both services default to the templates shipped in the image; a deployment with its own sets
``UPKEEP_NOTIFIER_TEMPLATE_DIR`` and ``UPKEEP_RULES_TEMPLATE_DIR`` to the same folder.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

TEMPLATE_ROOT = Path(__file__).parents[1] / "services" / "notifier" / "templates"


def missing_templates(names: Iterable[str], root: Path = TEMPLATE_ROOT) -> list[str]:
    """The names among ``names`` that have no folder with at least one locale under ``root``."""
    return sorted(
        name
        for name in set(names)
        if not (root / name).is_dir() or not any(p.is_dir() for p in (root / name).iterdir())
    )
