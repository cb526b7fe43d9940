"""FastAPI dependencies: the app state, a database session per request, and API-key roles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Iterator

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from . import crud
from .security import IMPLIED_ROLES, hash_key
from .state import ServiceState

CONSOLE_COOKIE = "triage_console_key"


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


def presented_key(request: Request) -> str | None:
    """The API key from `Authorization: Bearer`, `X-API-Key`, or the console cookie."""
    auth = request.headers.get("authorization")
    if auth and auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or request.cookies.get(CONSOLE_COOKIE) or None


def lookup_key(state: ServiceState, key: str | None) -> Principal | None:
    """The key's owner, revoked or not (cached for settings.api_key_cache_s); None if unknown."""
    if key is None:
        return None
    digest = hash_key(key)
    principal = state.keys.get(digest)
    if principal is None:
        with state.sessions() as session:
            row = crud.get_api_key(session, key_hash=digest)
            if row is None:
                return None
            principal = Principal(row.name, row.role, row.revoked_at)
        state.keys.put(digest, principal)
    return principal


def authenticate(state: ServiceState, key: str | None) -> Principal | None:
    """The owner of a valid (known, not revoked) key, else None."""
    principal = lookup_key(state, key)
    return principal if principal is not None and principal.revoked_at is None else None


# Declared so /docs shows the schemes and its "Authorize" button; `presented_key` reads them.
_bearer = HTTPBearer(auto_error=False, description="an API key from `triage apikey create`")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the same key, as a header of its own")


def require_role(role: str):
    async def dependency(
        request: Request,
        state: StateDep,
        _b: Annotated[object, Depends(_bearer)] = None,
        _k: Annotated[object, Depends(_api_key_header)] = None,
    ) -> Principal:
        if not state.settings.auth:
            return Principal("anonymous", "*")
        key, principal = presented_key(request), None
        if key is not None:  # a cache miss is a database query: off the event loop
            principal = state.keys.get(hash_key(key)) or await run_in_threadpool(lookup_key, state, key)
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
        if principal.role != role and role not in IMPLIED_ROLES.get(principal.role, ()):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"this needs an API key with the {role!r} role; yours has {principal.role!r}"
            )
        return principal

    dependency.__name__ = f"require_{role}"
    return dependency


IntakeDep = Annotated[Principal, Depends(require_role("intake"))]
AgentDep = Annotated[Principal, Depends(require_role("agent"))]
AdminDep = Annotated[Principal, Depends(require_role("admin"))]
