"""Who may use the analytics API and dashboard, and how they prove it.

Three ways in, tried in this order on each request (:meth:`Access.principal`):

1. an API key (``Authorization: Bearer`` or ``X-API-Key``) of scope ``analytics:read`` or
   ``analytics:admin``, for machines: without a ``staff_id`` it sees everything, with one it
   sees what that manager sees. A key presented but unknown is a failure, never a fall-through;
2. the session cookie set by signing in at ``/signin`` with an account of
   ``UPKEEP_ANALYTICS_ACCOUNTS`` (argon2 password hashes; make an entry with
   ``python -m services.analytics.signin hash USERNAME --role owner --staff-id S-1``);
3. a trusted reverse proxy's headers (off by default): the user header names the member of
   staff, the groups header gives the role; honoured only from ``proxy_trusted_ips``.

Routes take :meth:`Access.api_dependency` (401 without credentials) or
:meth:`Access.page_dependency` (a redirect to sign in); both check the session's CSRF token on
unsafe methods. :func:`install` adds the sign-in pages, that redirect and the security headers
to an app. The accounts' model, the cookies, the login limit and the headers themselves are in
:mod:`services.analytics.sessions`.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from argon2 import PasswordHasher
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import Field, SecretStr, TypeAdapter, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.analytics.labels import TEXT
from services.analytics.sessions import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    SIGNIN_CSRF_COOKIE,
    UNSAFE_METHODS,
    Account,
    Cookies,
    LoginLimiter,
    Passwords,
    Role,
    SecurityHeaders,
    Session,
    SessionCodec,
    hash_command,
    password_mark,
    read_form,
    safe_next,
    same_token,
    user_ref,
)
from shared.apikeys import ANALYTICS_ADMIN, ANALYTICS_READ, ApiKeySpec, KeyRing
from shared.events.fields import Id
from shared.settings import refuse_placeholder

__all__ = [
    "Access",
    "AccessSettings",
    "Account",
    "Principal",
    "SignInRequired",
    "install",
    "require_admin",
    "signin_router",
]

logger = logging.getLogger(__name__)

_STAFF_ID: TypeAdapter[str] = TypeAdapter(Id)


class AccessSettings(BaseSettings):
    """Who may sign in, and how (environment prefix ``UPKEEP_ANALYTICS_``; lists as JSON)."""

    model_config = SettingsConfigDict(env_prefix="UPKEEP_ANALYTICS_", extra="ignore")

    api_keys: list[ApiKeySpec] = Field(default_factory=list)
    accounts: list[Account] = Field(default_factory=list)
    # signs the session cookies; none: a random one per process, so sessions end at a restart
    # and do not work across replicas
    session_secret: SecretStr | None = None
    session_minutes: int = Field(default=480, ge=1, le=10_080)
    cookie_secure: bool = True  # HTTPS only (and Strict-Transport-Security); off for local http
    login_attempts: int = Field(default=5, ge=1, le=1_000)  # failures per username and per address
    login_window_s: int = Field(default=300, ge=1, le=86_400)
    # a trusted reverse proxy that authenticates users itself; none: off
    proxy_user_header: str | None = None  # e.g. X-Forwarded-User: its value is the staff id
    proxy_groups_header: str = "X-Forwarded-Groups"  # comma-separated
    proxy_trusted_ips: list[str] = Field(default_factory=list)  # peers allowed to set them (CIDRs)
    proxy_admin_groups: list[str] = Field(default_factory=lambda: ["upkeep-admins"])
    proxy_manager_groups: list[str] = Field(default_factory=lambda: ["upkeep-managers"])

    @field_validator("session_secret")
    @classmethod
    def _real_secret(cls, value: SecretStr | None) -> SecretStr | None:
        refuse_placeholder(value, "UPKEEP_ANALYTICS_SESSION_SECRET")
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("UPKEEP_ANALYTICS_SESSION_SECRET needs at least 32 characters")
        return value

    @field_validator("proxy_trusted_ips")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # ValueError: not an address nor a CIDR
        return value

    @field_validator("accounts")
    @classmethod
    def _unique(cls, value: list[Account]) -> list[Account]:
        names = [a.username.casefold() for a in value]
        if len(set(names)) != len(names):
            raise ValueError("two accounts have the same username")
        return value


@dataclass(frozen=True)
class Principal:
    """Who is calling. ``staff_id`` is None only for an admin (who sees everything); the scope
    of the others (themselves and whoever is under them) is worked out elsewhere."""

    name: str
    role: Role
    staff_id: str | None
    via: Literal["key", "session", "proxy"]
    can_admin: bool


class SignInRequired(Exception):
    """Raised by the page dependency without credentials; answered with a redirect to
    ``/signin?next=<target>`` by the handler :func:`install` adds."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target


def require_admin(principal: Principal) -> None:
    if not principal.can_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "for admins only")


class Access:
    """The authenticators, built once from :class:`AccessSettings`. ``hasher``: the argon2
    parameters (tests pass cheap ones); ``clock``: seconds since the epoch, for sessions and the
    login limit."""

    def __init__(
        self,
        settings: AccessSettings,
        *,
        hasher: PasswordHasher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.keys = KeyRing(settings.api_keys)
        self.accounts = {a.username: a for a in settings.accounts}
        self.passwords = Passwords(hasher or PasswordHasher())
        self.cookies = Cookies(settings.cookie_secure, settings.session_minutes * 60)
        if settings.session_secret is None:
            logger.warning(
                "no UPKEEP_ANALYTICS_SESSION_SECRET: a random one for this process; sessions "
                "end at a restart and do not work across replicas"
            )
            secret = secrets.token_urlsafe(32)
        else:
            secret = settings.session_secret.get_secret_value()
        self.sessions = SessionCodec(secret, settings.session_minutes * 60, clock)
        self.settings_secret = secret.encode()  # also keys the logs' user references
        self.limiter = LoginLimiter(settings.login_attempts, settings.login_window_s, clock)
        self._trusted = [ipaddress.ip_network(n, strict=False) for n in settings.proxy_trusted_ips]
        if settings.proxy_user_header and not self._trusted:
            logger.warning("proxy_user_header is set but no proxy_trusted_ips: it is ignored")

    async def principal(self, request: Request) -> Principal | None:
        """Who ``request`` comes from, None when nobody (or an unknown key); 403 for a known
        key without an analytics scope."""
        presented = _presented_key(request)
        if presented is not None:
            return self._key_principal(presented)
        session = self.session(request)
        if session is not None:
            role, staff = session.role, session.staff_id
            return Principal(session.username, role, staff, "session", role == "admin")
        return self._proxy_principal(request)

    def session(self, request: Request) -> Session | None:
        """The request's valid session, with its account's current role and staff id; None
        when it has none, or its account is gone or has a new password since."""
        session = self.sessions.load(request.cookies.get(SESSION_COOKIE))
        account = self.accounts.get(session.username) if session else None
        if session is None or account is None:
            return None
        if not hmac.compare_digest(session.mark, password_mark(account.password_hash)):
            return None
        return replace(session, role=account.role, staff_id=account.staff_id)

    def csrf_token(self, request: Request) -> str | None:
        """The session's CSRF token, for the forms of a page (None without a session)."""
        session = self.session(request)
        return session.csrf if session else None

    async def check_csrf(self, request: Request) -> None:
        """403 unless the request carries its session's CSRF token (header or form field)."""
        expected = self.csrf_token(request) or ""
        presented = request.headers.get(CSRF_HEADER, "")
        if not presented and request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            presented = ((await read_form(request)).get(CSRF_FIELD) or [""])[0]
        if not same_token(presented, expected):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong CSRF token")

    def api_dependency(self) -> Any:
        """``Depends``: the :class:`Principal`, else 401 with ``WWW-Authenticate: Bearer``."""

        async def authenticate(request: Request) -> Principal:
            who = await self.principal(request)
            if who is None:
                raise HTTPException(
                    status.HTTP_401_UNAUTHORIZED,
                    "an API key (Authorization: Bearer or X-API-Key) or a session is required",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            return await self._checked(request, who)

        return Depends(authenticate)

    def page_dependency(self) -> Any:
        """``Depends``: the :class:`Principal`, else a 303 to ``/signin?next=<this page>``."""

        async def authenticate(request: Request) -> Principal:
            who = await self.principal(request)
            if who is None:
                query = request.url.query
                raise SignInRequired(request.url.path + (f"?{query}" if query else ""))
            return await self._checked(request, who)

        return Depends(authenticate)

    require_admin = staticmethod(require_admin)

    async def verify(self, username: str, password: str) -> Account | None:
        """The account whose password this is, None otherwise (as long to say for any name)."""
        account = self.accounts.get(username)
        stored = account.password_hash if account else None
        return account if await self.passwords.verify(stored, password) else None

    async def _checked(self, request: Request, who: Principal) -> Principal:
        if who.via == "session" and request.method in UNSAFE_METHODS:
            await self.check_csrf(request)
        if who.via == "proxy" and request.method in UNSAFE_METHODS:
            self.check_origin(request)
        return who

    @staticmethod
    def check_origin(request: Request) -> None:
        """403 unless an unsafe request says it comes from this site (``Origin``, which
        browsers send with every POST): a proxy's SSO cookie rides along on any site's form,
        and there is no session token to ask for."""
        origin = request.headers.get("origin", "")
        host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
        if not origin or urlsplit(origin).netloc != host.split(",")[0].strip():
            raise HTTPException(status.HTTP_403_FORBIDDEN, "a cross-site request is refused")

    def client_address(self, request: Request) -> str:
        """The caller's address: behind a trusted proxy, the one it says it forwards for
        (the last of ``X-Forwarded-For``), else the peer's."""
        peer = request.client.host if request.client else "unknown"
        forwarded = request.headers.get("x-forwarded-for", "")
        if forwarded and self._peer_trusted(request):
            return forwarded.split(",")[-1].strip() or peer
        return peer

    def user_ref(self, username: str) -> str:
        """What the logs say instead of a username: a keyed hash (the staff list cannot be
        hashed to find who it was without the session key)."""
        return user_ref(username, self.settings_secret)

    def _key_principal(self, presented: str) -> Principal | None:
        spec = self.keys.find(presented)
        if spec is None:
            return None
        if ANALYTICS_READ not in spec.scopes and ANALYTICS_ADMIN not in spec.scopes:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"the key lacks scope {ANALYTICS_READ} or {ANALYTICS_ADMIN}",
            )
        admin = ANALYTICS_ADMIN in spec.scopes
        if spec.staff_id is None:  # a machine: sees everything
            return Principal(spec.name, "admin", None, "key", admin)
        return Principal(spec.name, "manager", spec.staff_id, "key", admin)

    def _proxy_principal(self, request: Request) -> Principal | None:
        header = self.settings.proxy_user_header
        if not header or not self._peer_trusted(request):
            return None
        try:
            staff_id = _STAFF_ID.validate_python(request.headers.get(header, ""))
        except ValidationError:
            return None
        raw = request.headers.get(self.settings.proxy_groups_header, "")
        groups = {g.strip() for g in raw.split(",")} - {""}
        role: Role = "owner"
        if groups & set(self.settings.proxy_admin_groups):
            role = "admin"
        elif groups & set(self.settings.proxy_manager_groups):
            role = "manager"
        return Principal(staff_id, role, staff_id, "proxy", role == "admin")

    def _peer_trusted(self, request: Request) -> bool:
        try:
            peer = ipaddress.ip_address(request.client.host if request.client else "")
        except ValueError:
            return False
        return any(peer in network for network in self._trusted)


def _presented_key(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("x-api-key") or None


def signin_router(access: Access) -> APIRouter:
    """``GET``/``POST /signin``, ``POST /signout`` and the style sheet (public: the sign-in
    page needs it)."""
    # here, not at the top: the dashboard imports this module (through callers)
    from services.analytics.dashboard import ENVIRONMENT, HTML_LANG, SWITCH, language

    page = ENVIRONMENT.get_template("signin.html")
    stylesheet = Path(__file__).with_name("templates").joinpath("dashboard.css").read_bytes()
    cookies = access.cookies
    router = APIRouter(include_in_schema=False)

    def form(
        request: Request, code: int, target: str, username: str = "", error: str = ""
    ) -> Response:
        """The sign-in form, and the double-submit cookie its token must match."""
        token = cookies.form_token(request)
        lang = language(request)
        t = TEXT[lang]
        html = page.render(
            t=t,
            lang=lang,
            html_lang=HTML_LANG[lang],
            switch=SWITCH[lang],
            next=target,
            csrf=token,
            username=username,
            error=t[error] if error else None,
        )
        response = HTMLResponse(html, status_code=code)
        cookies.set_form(response, token)
        return response

    @router.get("/signin", response_class=HTMLResponse)
    async def signin_page(request: Request) -> Response:
        return form(request, status.HTTP_200_OK, safe_next(request.query_params.get("next")))

    @router.post("/signin")
    async def signin(request: Request) -> Response:
        fields = await read_form(request)

        def field(name: str) -> str:
            return (fields.get(name) or [""])[0]

        username, password, target = field("username").strip(), field("password"), field("next")
        target = safe_next(target)
        if not same_token(field(CSRF_FIELD), request.cookies.get(SIGNIN_CSRF_COOKIE, "")):
            return form(request, status.HTTP_403_FORBIDDEN, target, username, "signin_expired")
        address = access.client_address(request)
        ref = access.user_ref(username)
        wait = access.limiter.retry_after(username, address)
        if wait is not None:
            logger.warning(
                "sign-in refused, too many failures (user %s)", ref, extra={"user_ref": ref}
            )
            response = form(
                request, status.HTTP_429_TOO_MANY_REQUESTS, target, username, "signin_limited"
            )
            response.headers["Retry-After"] = str(wait)
            return response
        # counted as failed before the password is checked, and forgiven when it is right:
        # attempts made at once cannot all slip past the limit while the hashes are computed
        access.limiter.failed(username, address)
        account = await access.verify(username, password) if username and password else None
        if account is None:
            logger.info("sign-in failed (user %s)", ref, extra={"user_ref": ref})
            return form(request, status.HTTP_401_UNAUTHORIZED, target, username, "signin_failed")
        access.limiter.succeeded(username, address)
        mark = password_mark(account.password_hash)
        session = access.sessions.open(account.username, account.role, account.staff_id, mark)
        response = RedirectResponse(target, status.HTTP_303_SEE_OTHER)
        cookies.set_session(response, access.sessions.dump(session))
        cookies.clear_form(response)
        logger.info("signed in (user %s)", ref, extra={"user_ref": ref})
        return response

    @router.post("/signout")
    async def signout(request: Request) -> Response:
        if access.session(request) is not None:  # without one there is nothing to end
            await access.check_csrf(request)
        response = RedirectResponse("/signin", status.HTTP_303_SEE_OTHER)
        cookies.clear_session(response)
        return response

    @router.get("/static/dashboard.css")
    async def dashboard_css() -> Response:
        headers = {"Cache-Control": "public, max-age=3600"}
        return Response(stylesheet, media_type="text/css", headers=headers)

    return router


async def _to_signin(request: Request, exc: Exception) -> Response:
    target = exc.target if isinstance(exc, SignInRequired) else "/"
    return RedirectResponse(f"/signin?next={quote(target, safe='/')}", status.HTTP_303_SEE_OTHER)


def install(app: FastAPI, access: Access) -> None:
    """The sign-in routes, the redirect of :class:`SignInRequired` and the security headers on
    every response (responses of unhandled errors, made outside the middleware, excepted)."""
    app.add_exception_handler(SignInRequired, _to_signin)
    app.include_router(signin_router(access))
    app.add_middleware(SecurityHeaders, hsts=access.settings.cookie_secure)


if __name__ == "__main__":
    sys.exit(hash_command())
