"""People who sign in to the console: a users table with argon2id password hashes
(argon2-cffi's defaults, RFC 9106's recommended parameters). API keys stay for machines.

Roles: `agent` (the console and the agent API) and `admin` (the same, plus what later
admin-only pages allow). A disabled user can no longer sign in, and their open sessions stop
working at their next request (sessions.py checks the user each time).
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import ConfigError
from .models import User, utcnow

ROLES = ("agent", "admin")
MIN_PASSWORD_CHARS = 10
_hasher = PasswordHasher()
# Verified against when the name is unknown, so a wrong name costs as long as a wrong password
# (no telling which names exist from the reply time).
_DUMMY_HASH = _hasher.hash("not a password of anyone")


def _check_name(username: str) -> str:
    name = username.strip()
    if not name or len(name) > 200 or any(c.isspace() or not c.isprintable() for c in name):
        raise ConfigError(f"user name {username!r} must be 1 to 200 printable characters without spaces")
    return name


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise ConfigError(f"the password is too short: use at least {MIN_PASSWORD_CHARS} characters")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def get_user(session: Session, *, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username)).first()


def create_user(session: Session, *, username: str, role: str, password: str | None) -> User:
    """Add a user with `role`; `password` None makes one who can only come through the trusted
    proxy header (settings.trusted_user_header). ConfigError for a taken name or a bad role."""
    name = _check_name(username)
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    if password is not None:
        check_password(password)
    if get_user(session, username=name) is not None:
        raise ConfigError(f"there is already a user {name!r}: pick another name (see `triage user list`)")
    user = User(username=name, role=role, password_hash=hash_password(password) if password is not None else None)
    session.add(user)
    session.flush()
    return user


def verify_user(session: Session, *, username: str, password: str) -> User | None:
    """The active user `username` if `password` is theirs, else None (unknown, disabled, wrong
    password or no password). Re-hashes a hash made with older parameters."""
    user = get_user(session, username=username.strip())
    stored = user.password_hash if user is not None and user.disabled_at is None else None
    try:
        _hasher.verify(stored or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if stored is None:
        return None
    if _hasher.check_needs_rehash(stored):
        user.password_hash = hash_password(password)
        session.flush()
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)).all())


def disable_user(session: Session, *, username: str) -> User:
    """Disable `username` (kept for the history of who did what). ConfigError if unknown."""
    user = get_user(session, username=username.strip())
    if user is None:
        known = ", ".join(u.username for u in list_users(session)) or "none yet"
        raise ConfigError(f"no user {username!r} (users: {known})")
    if user.disabled_at is None:
        user.disabled_at = utcnow()
        session.flush()
    return user


def set_password(session: Session, *, username: str, password: str) -> User:
    user = get_user(session, username=username.strip())
    if user is None:
        raise ConfigError(f"no user {username!r}: create it with `triage user create {username}`")
    check_password(password)
    user.password_hash = hash_password(password)
    session.flush()
    return user


# -- behind `triage user create|list|disable|password` (each migrates the database first) ---------
def _user_row(user: User) -> dict:
    return {"username": user.username, "role": user.role, "created": user.created_at, "disabled": user.disabled_at}


def create_user_at(database_url: str, *, username: str, role: str, password: str | None) -> dict:
    from .cli_ops import _migrated
    from .db import make_sessionmaker

    with _migrated(database_url) as engine, make_sessionmaker(engine)() as session, session.begin():
        return _user_row(create_user(session, username=username, role=role, password=password))


def list_users_at(database_url: str) -> list[dict]:
    from .cli_ops import _migrated
    from .db import make_sessionmaker

    with _migrated(database_url) as engine, make_sessionmaker(engine)() as session:
        return [_user_row(u) for u in list_users(session)]


def disable_user_at(database_url: str, *, username: str) -> dict:
    from .cli_ops import _migrated
    from .db import make_sessionmaker

    with _migrated(database_url) as engine, make_sessionmaker(engine)() as session, session.begin():
        return _user_row(disable_user(session, username=username))


def set_password_at(database_url: str, *, username: str, password: str) -> dict:
    from .cli_ops import _migrated
    from .db import make_sessionmaker

    with _migrated(database_url) as engine, make_sessionmaker(engine)() as session, session.begin():
        return _user_row(set_password(session, username=username, password=password))
