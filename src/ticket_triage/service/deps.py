"""FastAPI dependencies: the app state, a database session per request, and who is calling.

A caller is one of: an API key (`Authorization: Bearer`, `X-API-Key`; machines), a person
named by the trusted proxy's header (settings.trusted_user_header, believed only from
settings.forwarded_allow_ips), or the console's cookie (a signed session, sessions.py, or
a key stored by an older sign-in). A stale console cookie is a 401 with "login" (LoginRequired)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Iterator

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from . import crud, sessions
from .security import hash_key
from .state import ServiceState

CONSOLE_COOKIE = sessions.COOKIE


# Cheap dependencies are `async def`: FastAPI runs a plain `def` one in its thread pool, a
# hop that cost ~8% of the server's time per ticket under load (py-spy, bench/serve_load.py).
async def get_state(request: Request) -> ServiceState:
    return request.app.state.triage


StateDep = Annotated[ServiceState, Depends(get_state)]


def get_db(state: StateDep) -> Iterator[Session]:
    with state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


@dataclass(frozen=True)
class Principal:
    name: str
    role: str  # "intake", "agent", "admin", or "*" when auth is off
    revoked_at: datetime | None = None  # set for a revoked key: `authenticate` refuses it


class _CacheMiss(Exception):
    """A lookup that needs the database, asked for from the event loop (retried in a thread)."""


def lookup_digest(state: ServiceState, digest: str, *, db: bool = True) -> Principal | None:
    """The owner of the key with SHA-256 `digest`, revoked or not (cached for
    settings.api_key_cache_s); None if unknown. With db=False only the cache is asked."""
    principal = state.keys.get(digest)
    if principal is None:
        if not db:
            raise _CacheMiss()
        with state.sessions() as session:
            row = crud.get_api_key(session, key_hash=digest)
            if row is None:
                return None
            principal = Principal(row.name, row.role, row.revoked_at)
        state.keys.put(digest, principal)
    return principal


def lookup_key(state: ServiceState, key: str | None) -> Principal | None:
    """The key's owner, revoked or not (cached for settings.api_key_cache_s); None if unknown."""
    if key is None:
        return None
    return lookup_digest(state, hash_key(key))


def lookup_user(state: ServiceState, name: str, *, db: bool = True) -> Principal | None:
    """The user `name` as a Principal (role agent or admin; `revoked_at` = when disabled),
    cached like keys; None if there is no such user."""
    from .users import get_user

    cache_key = "user:" + name  # key digests are hex: no clash
    principal = state.keys.get(cache_key)
    if principal is None:
        if not db:
            raise _CacheMiss()
        with state.sessions() as session:
            user = get_user(session, username=name)
            if user is None:
                return None
            principal = Principal(user.username, user.role, user.disabled_at)
        state.keys.put(cache_key, principal)
    return principal


def session_principal(state: ServiceState, token: str, *, db: bool = True) -> Principal:
    """Who a session token signs in; SessionExpired if it is expired or forged, or its user is
    disabled (or gone), or the key it was made from is revoked."""
    claims = sessions.signer_for(state).read(token)
    if claims.key_hash is not None:
        principal = lookup_digest(state, claims.key_hash, db=db)
        if principal is None or principal.revoked_at is not None:
            raise sessions.SessionExpired("Your sign-in key was revoked, please sign in again")
        return principal
    principal = lookup_user(state, claims.name, db=db)
    if principal is None or principal.revoked_at is not None:
        raise sessions.SessionExpired("Your account was disabled, ask an admin")
    return principal


def proxy_principal(state: ServiceState, name: str, *, db: bool = True) -> Principal | None:
    """The person the trusted proxy names: their user (role from the users table), an agent if
    there is no such user; None when that user is disabled."""
    principal = lookup_user(state, name, db=db)
    if principal is None:
        return Principal(name, "agent")
    return principal if principal.revoked_at is None else None


def _header_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth and auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


def request_principal(request: Request, state: ServiceState, *, db: bool = True) -> Principal | None:
    """Whoever `request` comes from (see the module's docstring), None if nobody; a revoked key
    sent in a header comes back with `revoked_at` set. A console cookie that no longer signs in
    raises sessions.SessionExpired: the console sends the agent back to the sign-in form."""
    key = _header_key(request)
    if key is not None:
        return lookup_digest(state, hash_key(key), db=db)
    proxied = request.scope.get(sessions.TRUSTED_USER_SCOPE)
    if proxied:
        return proxy_principal(state, proxied, db=db)
    cookie = request.cookies.get(CONSOLE_COOKIE)
    if not cookie:
        return None
    if sessions.is_session_token(cookie):
        return session_principal(state, cookie, db=db)
    principal = lookup_digest(state, hash_key(cookie), db=db)  # a key stored by an older sign-in
    if principal is None or principal.revoked_at is not None:
        raise sessions.SessionExpired()
    return principal


def authenticate(state: ServiceState, key: str | None) -> Principal | None:
    """The owner of a valid (known, not revoked) key or session token, else None."""
    if key is not None and sessions.is_session_token(key):
        try:
            return session_principal(state, key)
        except sessions.SessionExpired:
            return None
    principal = lookup_key(state, key)
    return principal if principal is not None and principal.revoked_at is None else None


class LoginRequired(HTTPException):
    """401 for a console call whose session is stale: app.py answers {"detail", "login": "/"}."""

    def __init__(self, detail: str):
        super().__init__(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})
        self.login = "/"


# An agent's endpoints also serve admins (people with the admin role).
ACCEPTED_ROLES = {"agent": ("agent", "admin"), "intake": ("intake",)}


# Declared so /docs shows the schemes and its "Authorize" button; `request_principal` reads them.
_bearer = HTTPBearer(auto_error=False, description="an API key from `triage apikey create`")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the same key, as a header of its own")


def require_role(role: str):
    accepted = ACCEPTED_ROLES.get(role, (role,))

    async def dependency(
        request: Request,
        state: StateDep,
        _b: Annotated[object, Depends(_bearer)] = None,
        _k: Annotated[object, Depends(_api_key_header)] = None,
    ) -> Principal:
        if not state.settings.auth:
            return Principal("anonymous", "*")
        try:
            try:  # the caches first, on the event loop; a miss is a database query, off it
                principal = request_principal(request, state, db=False)
            except _CacheMiss:
                principal = await run_in_threadpool(request_principal, request, state)
        except sessions.SessionExpired as exc:
            raise LoginRequired(exc.reason) from None
        if principal is not None and principal.revoked_at is not None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                f"this API key was revoked on {principal.revoked_at:%Y-%m-%d %H:%M} UTC: ask for a new one (`triage apikey create`)",
                headers={
                    "WWW-Authenticate": 'Bearer error="invalid_token", error_description="the API key was revoked"'
                },
            )
        if principal is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "a valid API key is required: send `Authorization: Bearer <key>` (create one with `triage apikey create`)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if principal.role not in accepted:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"this needs an API key with the {role!r} role; yours has {principal.role!r}"
            )
        return principal

    dependency.__name__ = f"require_{role}"
    return dependency


IntakeDep = Annotated[Principal, Depends(require_role("intake"))]
AgentDep = Annotated[Principal, Depends(require_role("agent"))]
AdminDep = Annotated[Principal, Depends(require_role("admin"))]
