"""API keys: hashed at rest, two roles, 401 without a key, 403 with the wrong role."""

from __future__ import annotations

import pytest
from _service_support import issue_key
from sqlalchemy import select

from ticket_triage.errors import ConfigError
from ticket_triage.service.models import ApiKey
from ticket_triage.service.security import hash_key, issue_api_key

TICKET = {"body": "The debt collector keeps calling me at work."}


@pytest.fixture
def authed(make_client):
    client = make_client(auth=True)
    return client, issue_key(client, "intake", "web-form"), issue_key(client, "agent", "ann")


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_no_key_is_401_everywhere_but_health(authed):
    client, _, _ = authed
    for method, path, body in [
        ("POST", "/v1/tickets", TICKET),
        ("GET", "/v1/tickets", None),
        ("GET", "/v1/tickets/1", None),
        ("GET", "/v1/queues", None),
        ("POST", "/v1/tickets/1/feedback", {"category": "Loans"}),
        ("POST", "/v1/classify", {"texts": ["x"]}),
        ("GET", "/v1/feedback/export", None),
    ]:
        r = client.request(method, path, json=body)
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.headers["www-authenticate"] == "Bearer" and "API key" in r.json()["detail"]
    for path in ["/healthz", "/readyz"]:
        assert client.get(path).status_code == 200


def test_docs_and_metrics_need_an_agent_key_unless_made_public(make_client):
    client = make_client(auth=True)
    intake, agent = issue_key(client, "intake", "form"), issue_key(client, "agent", "ann")
    for path in ["/metrics", "/docs", "/redoc", "/openapi.json"]:
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=bearer(intake)).status_code == 403, path
        assert client.get(path, headers=bearer(agent)).status_code == 200, path
    assert client.get("/openapi.json", headers=bearer(agent)).json()["info"]["title"] == "ticket-triage"
    assert "triage_http_requests_total" in client.get("/metrics", headers=bearer(agent)).text

    docs_open = make_client(auth=True, public_docs=True)
    assert [docs_open.get(p).status_code for p in ["/docs", "/redoc", "/openapi.json", "/metrics"]] == [
        200,
        200,
        200,
        401,
    ]
    metrics_open = make_client(auth=True, public_metrics=True)
    assert [metrics_open.get(p).status_code for p in ["/metrics", "/docs", "/openapi.json"]] == [200, 401, 401]


def test_wrong_or_unknown_key_is_401(authed):
    client, intake, _ = authed
    assert client.post("/v1/tickets", json=TICKET, headers=bearer(intake + "x")).status_code == 401
    assert (
        client.post("/v1/tickets", json=TICKET, headers=bearer(hash_key(intake))).status_code == 401
    )  # the hash is no key


def test_roles(authed):
    client, intake, agent = authed
    r = client.post("/v1/tickets", json=TICKET, headers=bearer(intake))
    assert r.status_code == 201
    tid = r.json()["id"]
    assert client.post("/v1/classify", json={"texts": ["card"]}, headers={"X-API-Key": intake}).status_code == 200
    # intake cannot read queues or correct
    for method, path, body in [
        ("GET", f"/v1/tickets/{tid}", None),
        ("GET", "/v1/tickets", None),
        ("POST", f"/v1/tickets/{tid}/feedback", {"category": "Loans"}),
        ("GET", "/v1/feedback/export", None),
    ]:
        r = client.request(method, path, json=body, headers=bearer(intake))
        assert r.status_code == 403 and "'agent'" in r.json()["detail"], path
    # agent cannot create or classify
    assert client.post("/v1/tickets", json=TICKET, headers=bearer(agent)).status_code == 403
    assert client.post("/v1/classify", json={"texts": ["x"]}, headers=bearer(agent)).status_code == 403
    assert client.get(f"/v1/tickets/{tid}", headers=bearer(agent)).status_code == 200
    r = client.post(
        f"/v1/tickets/{tid}/feedback", json={"category": "Loans", "agent": "someone-else"}, headers=bearer(agent)
    )
    assert r.status_code == 200 and r.json()["feedback"][0]["agent"] == "ann"  # who = the key's owner


def test_keys_are_stored_hashed(authed):
    client, intake, agent = authed
    with client.app.state.triage.sessions() as session:
        rows = session.scalars(select(ApiKey)).all()
    assert {r.key_hash for r in rows} == {hash_key(intake), hash_key(agent)}
    assert all(len(r.key_hash) == 64 and intake not in (r.key_hash, r.prefix) for r in rows)
    assert intake.startswith("tt_") and len(intake) > 40


def test_issue_rejects_unknown_roles(authed):
    client, _, _ = authed
    with client.app.state.triage.sessions() as session:
        with pytest.raises(ConfigError, match="unknown role 'root'"):
            issue_api_key(session, name="x", role="root")
