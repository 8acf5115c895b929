"""The credentials the analytics integration tests call the API with: a machine's key that sees
everything (``analytics:read``) and may send reports (``analytics:admin``)."""

from __future__ import annotations

from services.analytics.signin import AccessSettings
from shared.apikeys import ApiKeySpec, digest

KEY = "upk_analytics_integration_test_key_0123456789"
HEADERS = {"X-API-Key": KEY}
ACCESS = AccessSettings(
    api_keys=[
        ApiKeySpec(name="test", sha256=digest(KEY), scopes=["analytics:read", "analytics:admin"])
    ],
    session_secret="an-integration-test-session-secret-0123456789",
    cookie_secure=False,
)
