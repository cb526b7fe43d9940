"""People (issue 18): users with argon2id passwords, `triage user ...`, signed expiring sessions,
an expired session answered with 401 {"detail", "login"} (defect 5), the proxy's user header."""

from __future__ import annotations

import io
import time

import pytest
from _service_support import issue_key, run_cli

from ticket_triage.errors import ConfigError
from ticket_triage.service import sessions
from ticket_triage.service.deps import CONSOLE_COOKIE
from ticket_triage.service.security import hash_key
from ticket_triage.service.users import create_user, disable_user, verify_user

PASSWORD = "correct horse battery"
MORTGAGE = {"body": "My mortgage escrow doubled."}


def add_user(client, name="ann", role="agent", password=PASSWORD):
    with client.app.state.triage.sessions() as session, session.begin():
        create_user(session, username=name, role=role, password=password)


def session_cookie(client, name="ann", role="agent", *, key_hash=None, now=None) -> str:
    return sessions.signer_for(client.app.state.triage).issue(name=name, role=role, key_hash=key_hash, now=now)


def as_console(client, token: str):
    client.cookies.set(CONSOLE_COOKIE, token)
    return client


@pytest.fixture
def auth_client(make_client):
    client = make_client(auth=True, api_key_cache_s=0)
    intake = issue_key(client, "intake", "form")
    t = client.post("/v1/tickets", json=MORTGAGE, headers={"Authorization": f"Bearer {intake}"})
    assert t.status_code == 201
    return client


# -- users ---------------------------------------------------------------------------------------------
def test_passwords_are_argon2id_and_verified(auth_client):
    add_user(auth_client)
    state = auth_client.app.state.triage
    with state.sessions() as session, session.begin():
        user = verify_user(session, username="ann", password=PASSWORD)
        assert user is not None and user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
        assert verify_user(session, username="ann", password="wrong password!") is None
        assert verify_user(session, username="nobody", password=PASSWORD) is None
        with pytest.raises(ConfigError, match="already a user"):
            create_user(session, username="ann", role="agent", password=PASSWORD)
        with pytest.raises(ConfigError, match="too short"):
            create_user(session, username="bob", role="agent", password="short")
        with pytest.raises(ConfigError, match="unknown role"):
            create_user(session, username="bob", role="root", password=PASSWORD)
        disable_user(session, username="ann")
        assert verify_user(session, username="ann", password=PASSWORD) is None
    assert sessions.login_user(state, "ann", PASSWORD) is None


def test_login_user_gives_the_principal(auth_client):
    add_user(auth_client, "lead", role="admin")
    principal = sessions.login_user(auth_client.app.state.triage, "lead", PASSWORD)
    assert principal is not None and (principal.name, principal.role) == ("lead", "admin")


@pytest.mark.filterwarnings("ignore::getpass.GetPassWarning")
def test_user_cli_create_list_disable(sqlite_url, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    code, out, err = run_cli(
        ["user", "create", "ann", "--role", "agent", "--password-stdin", "--db", sqlite_url], capsys
    )
    assert code == 0 and "created user 'ann'" in out, err
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    code, _, err = run_cli(["user", "create", "bob", "--password-stdin", "--db", sqlite_url], capsys)
    assert code == 1 and "too short" in err
    code, out, _ = run_cli(["user", "list", "--db", sqlite_url], capsys)
    assert code == 0 and "ann" in out and "agent" in out and "bob" not in out
    code, out, _ = run_cli(["user", "disable", "ann", "--db", sqlite_url], capsys)
    assert code == 0 and "disabled 'ann'" in out
    code, _, err = run_cli(["user", "disable", "zed", "--db", sqlite_url], capsys)
    assert code == 1 and "no user 'zed'" in err and "ann" in err
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n" + PASSWORD + "\n"))
    code, out, err = run_cli(["user", "create", "cy", "--role", "admin", "--db", sqlite_url], capsys)  # the prompt
    assert code == 0 and "role admin" in out, err


# -- sessions ---------------------------------------------------------------------------------------
def test_session_tokens_expire_and_cannot_be_forged():
    signer = sessions.SessionSigner(b"s" * 32, max_age_s=60)
    token = signer.issue(name="ann", role="agent")
    assert signer.read(token).name == "ann"
    with pytest.raises(sessions.SessionExpired):
        signer.read(token, now=time.time() + 61)
    payload, sig = token[3:].split(".")
    forged = sessions.SessionSigner(b"x" * 32, max_age_s=60).issue(name="ann", role="admin")
    for bad in (forged, f"s1.{payload}.{sig[:-2]}AA", "s1.abc", "s1." + payload + ".", "tt_notasession"):
        with pytest.raises(sessions.SessionExpired):
            signer.read(bad)


def test_a_session_cookie_authorises_the_agent_api_as_that_person(auth_client):
    add_user(auth_client)
    client = as_console(auth_client, session_cookie(auth_client))
    assert client.get("/v1/queues").status_code == 200
    r = client.post("/v1/tickets/1/feedback", json={"category": "Loans", "agent": "someone else"})
    assert r.status_code == 200 and r.json()["feedback"][0]["agent"] == "ann"


def test_an_expired_session_is_401_with_the_sign_in_page(auth_client):
    """Issue 18, defect 5: not the developer message about `Authorization: Bearer`."""
    add_user(auth_client)
    client = as_console(auth_client, session_cookie(auth_client, now=time.time() - 9 * 3600))
    r = client.post("/v1/tickets/1/confirm")
    assert r.status_code == 401
    assert r.json() == {"detail": "Your session expired, please sign in again", "login": "/"}
    assert "Bearer" not in r.json()["detail"]


def test_a_disabled_user_or_a_revoked_key_ends_the_session(auth_client):
    add_user(auth_client)
    client = as_console(auth_client, session_cookie(auth_client))
    with auth_client.app.state.triage.sessions() as session, session.begin():
        disable_user(session, username="ann")
    r = client.get("/v1/queues")
    assert r.status_code == 401 and r.json()["login"] == "/" and "disabled" in r.json()["detail"]
    key = issue_key(auth_client, "agent", "kiosk")
    as_console(auth_client, session_cookie(auth_client, "kiosk", key_hash=hash_key(key)))
    assert auth_client.get("/v1/queues").status_code == 200
    from ticket_triage.service.cli_ops import revoke_key

    revoke_key(str(auth_client.app.state.triage.engine.url.render_as_string(hide_password=False)), "kiosk")
    r = auth_client.get("/v1/queues")
    assert r.status_code == 401 and r.json()["login"] == "/" and "revoked" in r.json()["detail"]


def test_a_stale_key_cookie_also_sends_the_agent_to_sign_in(auth_client):
    as_console(auth_client, "tt_" + "x" * 40)
    r = auth_client.get("/v1/queues")
    assert r.status_code == 401 and r.json()["login"] == "/"
    # machines (a header, no cookie) keep the developer message
    auth_client.cookies.clear()
    r = auth_client.get("/v1/queues", headers={"Authorization": "Bearer tt_nope"})
    assert r.status_code == 401 and "login" not in r.json() and "Bearer" in r.json()["detail"]


def test_admins_may_use_agent_endpoints_intake_keys_may_not(auth_client):
    add_user(auth_client, "lead", role="admin")
    as_console(auth_client, session_cookie(auth_client, "lead", "admin"))
    assert auth_client.get("/v1/tickets").status_code == 200
    auth_client.cookies.clear()
    intake = issue_key(auth_client, "intake", "other-form")
    assert auth_client.get("/v1/tickets", headers={"Authorization": f"Bearer {intake}"}).status_code == 403


def test_a_role_in_a_session_is_what_the_user_has_now(auth_client):
    """A token claiming admin for an agent gives the agent's role (the database decides)."""
    add_user(auth_client, "ann", role="agent")
    as_console(auth_client, session_cookie(auth_client, "ann", "admin"))
    from ticket_triage.service.deps import request_principal

    class FakeRequest:
        headers: dict = {}
        scope: dict = {}
        cookies = {CONSOLE_COOKIE: session_cookie(auth_client, "ann", "admin")}

    assert request_principal(FakeRequest(), auth_client.app.state.triage).role == "agent"


# -- the reverse proxy's user header -----------------------------------------------------------------
def test_the_proxy_user_header_is_believed_only_from_trusted_peers(make_client):
    # TestClient's peer is called "testclient"
    client = make_client(auth=True, trusted_user_header="X-Forwarded-User", forwarded_allow_ips="testclient")
    intake = issue_key(client, "intake", "form")
    client.post("/v1/tickets", json=MORTGAGE, headers={"Authorization": f"Bearer {intake}"})
    r = client.post("/v1/tickets/1/feedback", json={"category": "Loans"}, headers={"X-Forwarded-User": "dana"})
    assert r.status_code == 200 and r.json()["feedback"][0]["agent"] == "dana"
    add_user(client, "eve")
    with client.app.state.triage.sessions() as session, session.begin():
        disable_user(session, username="eve")
    assert client.get("/v1/queues", headers={"X-Forwarded-User": "eve"}).status_code == 401

    untrusted = make_client(auth=True, trusted_user_header="X-Forwarded-User", forwarded_allow_ips="10.0.0.0/8")
    assert untrusted.get("/v1/queues", headers={"X-Forwarded-User": "dana"}).status_code == 401


def test_the_user_header_needs_trusted_proxies():
    from pydantic import ValidationError

    from ticket_triage.service import Settings

    with pytest.raises(ValidationError, match="forwarded_allow_ips"):
        Settings(trusted_user_header="X-Forwarded-User")
    with pytest.raises(ValidationError):
        Settings(session_secret="short")
