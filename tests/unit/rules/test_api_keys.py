"""Every route of the rules API needs a key with rules:read (or rules:admin)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from services.rules.api import rules_router
from services.rules.engine import RulesEngine
from services.rules.state import SubjectState
from services.rules.store import InMemorySubjectStore, InMemoryTimerStore
from shared.apikeys import ApiKeySpec, KeyRing, digest

READ, INGEST = "upk_read", "upk_ingest"


async def test_the_rules_api_needs_a_read_key() -> None:
    subjects = InMemorySubjectStore()
    await subjects.save([SubjectState(id="customer:C-1")])
    engine = RulesEngine([], subjects, InMemoryTimerStore(), events_topic="e", actions_topic="a")
    keys = KeyRing(
        [
            ApiKeySpec(name="ops", sha256=digest(READ), scopes=["rules:read"]),
            ApiKeySpec(name="crm", sha256=digest(INGEST), scopes=["events:write"]),
        ]
    )
    app = FastAPI()
    app.include_router(rules_router(engine, subjects, InMemoryTimerStore(), keys))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://rules") as http:
        for path in (
            "/v1/rules",
            "/v1/subjects/customer:C-1",
            "/v1/subjects/customer:C-1/timers",
            "/v1/churn/model",
        ):
            assert (await http.get(path)).status_code == 401, path
            wrong = await http.get(path, headers={"X-API-Key": INGEST})
            assert wrong.status_code == 403, path
        answer = await http.get("/v1/subjects/customer:C-1", headers={"X-API-Key": READ})
        assert answer.status_code == 200
        assert answer.json()["id"] == "customer:C-1"
