"""Signed one-click unsubscribe links (RFC 8058) and their verification: the dispatcher puts
them in marketing messages, the API's ``/v1/unsubscribe`` checks them."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode

from services.notifier.policy import MARKETING


class Unsubscribes:
    def __init__(self, base_url: str, secret: bytes) -> None:
        self._base, self._secret = base_url.rstrip("/"), secret

    def token(self, recipient: str, category: str) -> str:
        mac = hmac.new(self._secret, f"{recipient}|{category}".encode(), hashlib.sha256)
        return mac.hexdigest()[:32]

    def url(self, recipient: str, category: str = MARKETING) -> str:
        query = urlencode({"r": recipient, "c": category, "t": self.token(recipient, category)})
        return f"{self._base}/v1/unsubscribe?{query}"

    def valid(self, recipient: str, category: str, token: str) -> bool:
        return hmac.compare_digest(self.token(recipient, category).encode(), token.encode())
