"""The mechanics of signing in to the analytics dashboard: the password accounts (and the
``hash`` command that makes one), password checks, the signed session cookie, the sign-in
form's cookie and fields, the limit on failed sign-ins, and the security headers every response
carries.

Used by :mod:`services.analytics.signin`, which decides who is calling and what they are (API
keys, sessions, a trusted proxy); nothing here knows about API keys or proxies.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import hashlib
import hmac
import json
import math
import re
import secrets
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self
from urllib.parse import parse_qs

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import HTTPException, Request, Response, status
from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.events.fields import Id

SESSION_COOKIE = "upkeep_session"
SIGNIN_CSRF_COOKIE = "upkeep_csrf"  # the sign-in form's double-submit token
FORM_LIMIT = 8 * 1024  # bytes of a urlencoded form read at most (sign-in, CSRF field)
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
VERIFYING_AT_ONCE = 4  # argon2 takes 64 MiB per verification with the library's defaults
_SALT = "upkeep.analytics.session"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")  # what new_token() makes

Role = Literal["admin", "manager", "owner"]
Username = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class Account(BaseModel):
    """Someone who signs in with a password. Entries come from the ``hash`` command."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    username: Username
    password_hash: str = Field(repr=False, max_length=500)  # argon2, in PHC string format
    role: Role
    staff_id: Id | None = None  # who they are in the staff directory; admins may have none

    @field_validator("password_hash")
    @classmethod
    def _argon2(cls, value: str) -> str:
        if not value.startswith("$argon2"):
            raise ValueError("password_hash must be an argon2 hash (the signin hash command)")
        return value

    @model_validator(mode="after")
    def _staff_unless_admin(self) -> Self:
        if self.role != "admin" and self.staff_id is None:
            raise ValueError(f"the account {self.username!r} of role {self.role} needs a staff_id")
        return self


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(presented: str, expected: str) -> bool:
    """Both given and equal, compared in constant time."""
    return bool(presented and expected) and hmac.compare_digest(
        presented.encode(), expected.encode()
    )


def user_ref(username: str, key: bytes = b"") -> str:
    """What the logs say instead of a username (personal data): a short keyed hash of it."""
    return hmac.new(key or b"upkeep", username.encode(), hashlib.sha256).hexdigest()[:12]


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site, else ``/`` (no open redirect)."""
    if not target or len(target) > 2_000 or not target.startswith("/"):
        return "/"
    if (
        target.startswith("//")
        or "\\" in target
        or any(ord(c) < 32 or ord(c) == 127 for c in target)
    ):
        return "/"
    return target


async def read_form(request: Request) -> dict[str, list[str]]:
    """The urlencoded form of ``request``, at most :data:`FORM_LIMIT` bytes (else 413)."""
    declared = request.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > FORM_LIMIT:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "the form is too large")
    body = b""
    async for chunk in request.stream():  # a chunked body is counted as it arrives
        body += chunk
        if len(body) > FORM_LIMIT:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "the form is too large")
    request._body = body  # what Request.body() caches: the route can still read the body
    try:
        return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=20)
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "too many form fields") from exc


class Passwords:
    """Checks passwords against argon2 hashes. For an unknown username it checks against a dummy
    hash all the same, so the answer takes as long either way; at most
    :data:`VERIFYING_AT_ONCE` at a time, each in a thread (argon2 is slow on purpose)."""

    def __init__(self, hasher: PasswordHasher) -> None:
        self.hasher = hasher
        self._dummy = hasher.hash(new_token())
        self._at_once = asyncio.Semaphore(VERIFYING_AT_ONCE)

    async def verify(self, stored: str | None, password: str) -> bool:
        async with self._at_once:
            try:
                await asyncio.to_thread(self.hasher.verify, stored or self._dummy, password)
            except (VerificationError, InvalidHashError):  # VerifyMismatchError included
                return False
        return stored is not None


class Cookies:
    """How the cookies are set: HttpOnly, Secure when ``secure``; the session's on every path
    for ``max_age_s``, SameSite=Lax; the sign-in form's token only for /signin, Strict."""

    def __init__(self, secure: bool, max_age_s: int) -> None:
        self.secure = secure
        self.max_age_s = max_age_s

    def set_session(self, response: Response, value: str) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            value,
            max_age=self.max_age_s,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )

    def clear_session(self, response: Response) -> None:
        response.delete_cookie(
            SESSION_COOKIE, path="/", secure=self.secure, httponly=True, samesite="lax"
        )

    @staticmethod
    def form_token(request: Request) -> str:
        """The sign-in form's token: the browser's (several tabs may be open), else a new one."""
        token = request.cookies.get(SIGNIN_CSRF_COOKIE, "")
        return token if _TOKEN.match(token) else new_token()

    def set_form(self, response: Response, token: str) -> None:
        response.set_cookie(
            SIGNIN_CSRF_COOKIE,
            token,
            path="/signin",
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )

    def clear_form(self, response: Response) -> None:
        response.delete_cookie(
            SIGNIN_CSRF_COOKIE,
            path="/signin",
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )


def password_mark(password_hash: str) -> str:
    """A short mark of an account's password hash, kept in its sessions: when the password is
    changed (a new hash in the configuration), the sessions signed in with the old one end."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Session:
    """What the session cookie says: who signed in, their CSRF token, when."""

    username: str
    role: Role
    staff_id: str | None
    csrf: str
    issued_at: int  # seconds since the epoch, by the codec's clock
    mark: str  # :func:`password_mark` of the password the session was opened with


class _ClockedSigner(TimestampSigner):
    """itsdangerous' timestamp signer on an injectable clock (tests move time forward)."""

    def __init__(self, *args: Any, clock: Callable[[], float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clock = clock

    def get_timestamp(self) -> int:
        return int(self._clock())


class SessionCodec:
    """Signs sessions into cookie values and reads them back. The value is signed, not
    encrypted: the browser can read it (there is nothing in it the user may not know) but not
    change it. A value that was changed, signed with another secret, or is older than
    ``max_age_s`` reads as no session at all."""

    def __init__(self, secret: str, max_age_s: int, clock: Callable[[], float]) -> None:
        self.max_age_s = max_age_s
        self._clock = clock
        self._serializer = URLSafeTimedSerializer(
            secret, salt=_SALT, signer=_ClockedSigner, signer_kwargs={"clock": clock}
        )

    def open(self, username: str, role: Role, staff_id: str | None, mark: str) -> Session:
        """A new session, with a CSRF token of its own."""
        return Session(username, role, staff_id, new_token(), int(self._clock()), mark)

    def dump(self, session: Session) -> str:
        payload = {
            "u": session.username,
            "r": session.role,
            "s": session.staff_id,
            "c": session.csrf,
            "iat": session.issued_at,
            "m": session.mark,
        }
        return self._serializer.dumps(payload)

    def load(self, value: str | None) -> Session | None:
        if not value:
            return None
        try:
            payload = self._serializer.loads(value, max_age=self.max_age_s)
        except BadData:  # tampered, another secret, expired, not even a signed value
            return None
        try:
            role = payload["r"]
            if role not in ("admin", "manager", "owner"):
                return None
            return Session(
                str(payload["u"]),
                role,
                None if payload["s"] is None else str(payload["s"]),
                str(payload["c"]),
                int(payload["iat"]),
                str(payload["m"]),
            )
        except (KeyError, TypeError, ValueError):  # signed by us, but not a session's shape
            return None


class LoginLimiter:
    """At most ``attempts`` failed sign-ins per username and per client address in a sliding
    window of ``window_s`` seconds. The counts live in this process's memory: they start again
    at a restart, and each replica counts its own (the limit multiplies by the replicas)."""

    _SWEEP_AT = 10_000  # keys before stale ones are swept: spraying names cannot grow it forever

    def __init__(self, attempts: int, window_s: int, clock: Callable[[], float]) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, username: str, address: str) -> int | None:
        """Seconds until the next attempt may be made, None when it may be made now."""
        now = self._clock()
        waits = [self._wait(key, now) for key in self._keys(username, address)]
        blocked = [w for w in waits if w is not None]
        return max(blocked) if blocked else None

    def failed(self, username: str, address: str) -> None:
        now = self._clock()
        if len(self._failures) >= self._SWEEP_AT:
            self._sweep(now)
        for key in self._keys(username, address):
            self._failures.setdefault(key, deque(maxlen=self.attempts)).append(now)

    def succeeded(self, username: str, address: str | None = None) -> None:
        """A right password: the username's failures are forgotten, and the attempt just
        counted for the address (see the sign-in route) is taken back."""
        self._failures.pop(self._user_key(username), None)
        if address is not None:
            times = self._failures.get(self._keys(username, address)[1])
            if times:
                times.pop()

    def _wait(self, key: str, now: float) -> int | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        if len(times) < self.attempts:
            return None
        return max(1, math.ceil(times[0] + self.window_s - now))

    def _sweep(self, now: float) -> None:
        for key in [k for k, times in self._failures.items() if times[-1] <= now - self.window_s]:
            del self._failures[key]

    @staticmethod
    def _user_key(username: str) -> str:
        return "u:" + username.casefold()

    def _keys(self, username: str, address: str) -> tuple[str, str]:
        return self._user_key(username), "a:" + address


CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
HSTS = "max-age=31536000; includeSubDomains"
# the interactive API docs (FastAPI's Swagger UI and ReDoc) load their script and style sheet
# from jsDelivr and start with an inline script: only those pages may (they show no data)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
DOCS_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: "
    "https://fastapi.tiangolo.com https://cdn.redoc.ly; connect-src 'self'; "
    "worker-src blob:; frame-ancestors 'none'; base-uri 'none'"
)


class SecurityHeaders:
    """Pure ASGI middleware: the security headers on every HTTP response that passes through it
    (pages, the JSON API, /metrics, 401s and 404s), and ``Cache-Control: no-store`` on those
    that do not set a Cache-Control of their own (the style sheet does). The body is passed on
    untouched, so streaming responses keep streaming. ``hsts``: add Strict-Transport-Security
    (only when served over HTTPS, i.e. secure cookies are on)."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _HEADERS.items():
                    headers[name] = value
                if scope.get("path") in DOCS_PATHS:
                    headers["Content-Security-Policy"] = DOCS_POLICY
                if self.hsts:
                    headers["Strict-Transport-Security"] = HSTS
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def hash_command(argv: list[str] | None = None) -> int:
    """``python -m services.analytics.signin hash USERNAME --role owner --staff-id S-1``: reads
    the password from stdin (asked for on a terminal), prints the entry of
    UPKEEP_ANALYTICS_ACCOUNTS for it."""
    parser = argparse.ArgumentParser(description="Make an entry of UPKEEP_ANALYTICS_ACCOUNTS.")
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("hash", help="hash a password (from stdin) and print the account")
    make.add_argument("username")
    make.add_argument("--role", choices=["admin", "manager", "owner"], default="owner")
    make.add_argument("--staff-id", default=None, help="needed for a manager or an owner")
    args = parser.parse_args(argv)
    if args.role != "admin" and not args.staff_id:
        parser.error(f"a {args.role} needs --staff-id")
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        parser.error("the password needs at least 8 characters")
    try:
        entry = Account(
            username=args.username,
            password_hash=PasswordHasher().hash(password),
            role=args.role,
            staff_id=args.staff_id,
        )
    except ValidationError as exc:
        parser.error("; ".join(str(e["msg"]) for e in exc.errors()))
    sys.stdout.write(json.dumps(entry.model_dump(exclude_none=True)) + "\n")
    return 0
