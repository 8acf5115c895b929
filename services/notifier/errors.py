"""How a delivery attempt can fail. Channels raise these; the dispatcher decides what follows:
a transient failure is tried again later (never in a sleep of the consumer loop), a permanent
one fails the action with its reason and dead-letters it."""

from __future__ import annotations


class DeliveryError(Exception):
    """A delivery attempt failed. ``reason`` is a short code for metrics and outcomes."""

    transient = False

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class TransientDeliveryError(DeliveryError):
    """Worth trying again: a timeout, a refused connection, HTTP 5xx or 429, SMTP 4xx.
    ``retry_after`` (seconds) is the provider's own hint (HTTP ``Retry-After``), if any."""

    transient = True

    def __init__(self, reason: str, detail: str = "", retry_after: float | None = None) -> None:
        super().__init__(reason, detail)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Trying again cannot help: HTTP 4xx, SMTP 5xx, a refused address, a template error."""


class RecipientRefused(PermanentDeliveryError):
    """The provider refused the address for good (SMTP 550/551/553): a hard bounce; the
    dispatcher adds the address to the suppressions."""
