"""API keys: random 256-bit tokens, stored only as SHA-256; three roles (an admin key may also
do what an agent key does: see `deps.require_role`)."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy.orm import Session

from ..errors import ConfigError
from . import crud

ROLES = ("intake", "agent", "admin")
KEY_PREFIX = "tt_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def issue_api_key(session: Session, *, name: str, role: str) -> str:
    """Create a key with `role`, store its hash, and return the key itself (shown once)."""
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    if not name.strip():
        raise ConfigError("an API key needs a name (who or what uses it)")
    key = generate_key()
    crud.create_api_key(session, name=name.strip(), role=role, key_hash=hash_key(key), prefix=key[:10])
    return key
