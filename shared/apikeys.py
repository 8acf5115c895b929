"""API keys for the services' HTTP APIs: stored hashed (SHA-256), each with scopes
(``events:write`` for ingest, ``notifier:admin`` for the notifier's management endpoints,
``rules:read`` / ``rules:admin`` for the rules service's journeys,
``analytics:read`` / ``analytics:admin`` for the analytics API and dashboard (with a ``staff_id``:
that member of staff's view, without one: everything),
``tasks:own`` for a member of staff's own tasks: such a key is bound to a ``staff_id``).

Keys are 32 random bytes, so a plain SHA-256 is enough (no dictionary to attack); comparison is
constant-time. Make a key with ``python -m shared.apikeys new NAME --scope SCOPE`` and put the
printed JSON entry into the service's ``UPKEEP_<SERVICE>_API_KEYS`` (a JSON list); give the key
itself to the client. A key for one member of staff's tasks:
``python -m shared.apikeys new wang-fang --scope tasks:own --staff-id S-1``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import secrets
import sys
from typing import Annotated, Any, Self

from fastapi import Depends, HTTPException, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, ValidationError, model_validator

from shared.events.fields import Id

WRITE_EVENTS = "events:write"
NOTIFIER_ADMIN = "notifier:admin"
TASKS_OWN = "tasks:own"  # the tasks of the key's staff_id only
RULES_READ = "rules:read"  # the rules service's read API (journeys and their history)
RULES_ADMIN = "rules:admin"  # changing journeys, dry runs
ANALYTICS_READ = "analytics:read"  # the analytics API and dashboard
ANALYTICS_ADMIN = "analytics:admin"  # the analytics service's admin actions
KEY_PREFIX = "upk_"


class ApiKeySpec(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[str] = Field(default_factory=lambda: [WRITE_EVENTS])
    staff_id: Id | None = None  # the member of staff a tasks:own key acts for

    @model_validator(mode="after")
    def _own_tasks_of_someone(self) -> Self:
        if TASKS_OWN in self.scopes and self.staff_id is None:
            raise ValueError(f"a key of scope {TASKS_OWN} needs a staff_id")
        return self


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyRing:
    """The configured keys; finds the one a request presented."""

    def __init__(self, specs: list[ApiKeySpec]) -> None:
        self._specs = list(specs)

    def find(self, presented: str) -> ApiKeySpec | None:
        candidate = digest(presented)
        found = None
        for spec in self._specs:  # no early exit: timing does not reveal which key matched
            if hmac.compare_digest(candidate, spec.sha256):
                found = spec
        return found


_bearer = HTTPBearer(auto_error=False)
_header_key = APIKeyHeader(name="X-API-Key", auto_error=False)


def _unauthorised(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


def require_scope(keys: KeyRing, scope: str, *alternatives: str) -> Any:
    """A FastAPI dependency: 401 without a known key, 403 when the key has neither ``scope``
    nor any of ``alternatives``; gives the key's :class:`ApiKeySpec` to the route."""
    allowed = (scope, *alternatives)

    def authenticate(
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header_key: Annotated[str | None, Depends(_header_key)],
    ) -> ApiKeySpec:
        presented = bearer.credentials if bearer else header_key
        if not presented:
            raise _unauthorised("an API key is required (Authorization: Bearer or X-API-Key)")
        spec = keys.find(presented)
        if spec is None:
            raise _unauthorised("unknown API key")
        if not any(s in spec.scopes for s in allowed):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"the key lacks scope {' or '.join(allowed)}"
            )
        return spec

    return Depends(authenticate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Create an API key.")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("new", help="print a new key and its configuration entry")
    create.add_argument("name")
    create.add_argument("--scope", action="append", default=None)
    create.add_argument("--staff-id", default=None, help=f"the member of staff ({TASKS_OWN})")
    args = parser.parse_args(argv)
    key = new_key()
    try:
        entry = ApiKeySpec(
            name=args.name,
            sha256=digest(key),
            scopes=args.scope or [WRITE_EVENTS],
            staff_id=args.staff_id,
        )
    except ValidationError as exc:
        parser.error("; ".join(str(e["msg"]) for e in exc.errors()))
    body = json.dumps(entry.model_dump(exclude_none=True))
    sys.stdout.write(f"key (give to the client, shown once): {key}\n")
    sys.stdout.write(f"entry for UPKEEP_<SERVICE>_API_KEYS: {body}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
