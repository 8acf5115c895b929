"""The Upkeep event contract: CloudEvents 1.0 envelope and versioned payload models."""

from shared.events.envelope import CanonicalEvent, format_time
from shared.events.types import EVENT_TYPES, EventPayload, resolve_type

__all__ = ["EVENT_TYPES", "CanonicalEvent", "EventPayload", "format_time", "resolve_type"]
