"""Signed console sessions: who signed in, with which role, until when, in an HttpOnly cookie.

A session token is `s1.<payload>.<signature>`: the payload is base64url JSON {"n": name,
"r": role, "e": expiry (Unix seconds), "k": the API key's SHA-256 when signed in with a key},
the signature HMAC-SHA256 over it with settings.session_secret (a random secret per process
when unset: sessions then end when the service restarts, and replicas need a shared secret).
The token only says who; deps.py checks at each request that the user is still active (or
the key not revoked), so disabling a user or revoking a key ends their sessions.

Expired and tampered tokens raise SessionExpired; the API answers 401 with
{"detail": ..., "login": "/"} (app.py) and console pages send the agent back to the sign-in
form (issue 18, defect 5).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from fastapi import Request, Response

PREFIX = "s1."
COOKIE = "triage_console_key"  # deps.CONSOLE_COOKIE: a session token (or, from older sign-ins, a key)
EXPIRED_MESSAGE = "Your session expired, please sign in again"


class SessionExpired(Exception):
    """The session token is past its expiry, tampered with, or its user or key is no longer valid."""

    def __init__(self, reason: str = EXPIRED_MESSAGE):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SessionClaims:
    name: str
    role: str
    expires_at: float
    key_hash: str | None = None  # signed in with an API key: the session lasts while the key does


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def is_session_token(value: str | None) -> bool:
    return bool(value) and value.startswith(PREFIX)


class SessionSigner:
    def __init__(self, secret: bytes, max_age_s: float):
        if len(secret) < 16:
            raise ValueError("a session secret needs at least 16 bytes")
        self._secret = secret
        self.max_age_s = max_age_s

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, *, name: str, role: str, key_hash: str | None = None, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.max_age_s)
        claims = {"n": name, "r": role, "e": expires, "k": key_hash}
        payload = _b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        return f"{PREFIX}{payload}.{self._sign(payload)}"

    def read(self, token: str, *, now: float | None = None) -> SessionClaims:
        """The claims of a valid, unexpired token; SessionExpired otherwise (what went wrong is
        not told: a forged cookie gets the same answer as an old one)."""
        if not is_session_token(token) or token.count(".") != 2:
            raise SessionExpired()
        payload, signature = token[len(PREFIX) :].split(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            raise SessionExpired()
        try:
            claims = json.loads(_unb64(payload))
            parsed = SessionClaims(str(claims["n"]), str(claims["r"]), float(claims["e"]), claims.get("k"))
        except (ValueError, KeyError, TypeError):
            raise SessionExpired() from None
        if parsed.expires_at <= (time.time() if now is None else now):
            raise SessionExpired()
        return parsed


def make_signer(settings) -> SessionSigner:
    """The signer of one app: settings.session_secret, or a random secret for this process."""
    secret = settings.session_secret.get_secret_value().encode("utf-8") if settings.session_secret else None
    return SessionSigner(secret or secrets.token_bytes(32), settings.session_max_age_s)


def signer_for(state) -> SessionSigner:
    """The app's signer (ServiceState.signer, made once with the state)."""
    return state.signer


def start_session(response: Response, request: Request, state, *, name: str, role: str, key_hash: str | None = None):
    """Sign `name` in: a session cookie (HttpOnly, SameSite=Strict, Secure over https) valid for
    settings.session_max_age_s. For a sign-in with an API key, pass its hash (security.hash_key)."""
    signer = signer_for(state)
    response.set_cookie(
        COOKIE,
        signer.issue(name=name, role=role, key_hash=key_hash),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=int(signer.max_age_s),
        path="/",
    )


def end_session(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/")


# -- the trusted proxy's user header ---------------------------------------------------------------
TRUSTED_USER_SCOPE = "triage.trusted_user"


def _trusted_networks(spec: str) -> list | None:
    """settings.forwarded_allow_ips as networks; None means any peer ('*')."""
    import ipaddress

    items = [item.strip() for item in spec.split(",") if item.strip()]
    if "*" in items:
        return None
    networks: list = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            networks.append(item)  # not an address (e.g. a unix socket's name): compared as text
    return networks


class TrustedUserHeader:
    """ASGI middleware: the user named in `header` (e.g. X-Forwarded-User) is believed only when
    the TCP peer is one of `allow_ips` (the reverse proxy that authenticated them); it is put
    in the scope (TRUSTED_USER_SCOPE) for deps.py. From any other peer it is ignored. Added
    outermost, so the peer is the real one, before X-Forwarded-For rewrites it."""

    def __init__(self, app, *, header: str, allow_ips: str):
        self.app = app
        self.header = header.lower().encode("latin-1")
        self.networks = _trusted_networks(allow_ips)

    def _trusted(self, scope) -> bool:
        import ipaddress

        client = scope.get("client")
        if not client:
            return False
        if self.networks is None:
            return True
        try:
            address = ipaddress.ip_address(client[0])
        except ValueError:  # a unix socket or a test client's made-up name
            return client[0] in self.networks
        return any(not isinstance(net, str) and address in net for net in self.networks)

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket") and self._trusted(scope):
            for name, value in scope.get("headers", ()):
                if name == self.header:
                    user = value.decode("latin-1").strip()
                    if user:
                        scope[TRUSTED_USER_SCOPE] = user[:200]
                    break
        await self.app(scope, receive, send)


def login_user(state, username: str, password: str):
    """The deps.Principal of the active user `username` if `password` is theirs, else None.
    For POST /console/login; follow it with start_session(response, request, state, name=..., role=...)."""
    from .deps import Principal
    from .users import verify_user

    with state.sessions() as session, session.begin():
        user = verify_user(session, username=username, password=password)
        return Principal(user.username, user.role) if user is not None else None
