"""The admin role: only an admin key switches model versions; an admin key also does what an
agent key does, but never what an intake key does."""

from __future__ import annotations

import pytest
from _registry_support import Loader, make_registry
from _service_support import issue_key

ADMIN_CALLS = [
    ("get", "/v1/admin/model", None),
    ("post", "/v1/admin/model", {"version": "v2"}),
    ("post", "/v1/admin/model/rollback", None),
    ("get", "/v1/admin/shadow", None),
    ("post", "/v1/admin/shadow", {"version": "v2"}),
]


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(registry_app, tmp_path):
    client = registry_app(make_registry(tmp_path), Loader(), auth=True)
    keys = {role: issue_key(client, role, f"{role}-key") for role in ("intake", "agent", "admin")}
    return client, keys


def _call(client, method, path, body, key=None):
    headers = bearer(key) if key else {}
    return client.request(method.upper(), path, json=body, headers=headers)


def test_only_admin_keys_reach_the_admin_endpoints(keyed):
    client, keys = keyed
    for method, path, body in ADMIN_CALLS:
        assert _call(client, method, path, body).status_code == 401, path
        for role in ("intake", "agent"):
            response = _call(client, method, path, body, keys[role])
            assert response.status_code == 403, (path, role)
            assert "'admin' role" in response.json()["detail"]
    assert client.app.state.triage.live.version == "v1"  # nothing switched by the refused calls
    for method, path, body in ADMIN_CALLS:
        assert _call(client, method, path, body, keys["admin"]).status_code == 200, path
    history = client.get("/v1/admin/model", headers=bearer(keys["admin"])).json()["history"]
    assert [h["by"] for h in history[1:]] == ["api:admin-key"] * 3  # promote, rollback, shadow


def test_an_admin_key_does_agent_work_but_not_intake(keyed):
    client, keys = keyed
    ticket = client.post("/v1/tickets", json={"body": "card"}, headers=bearer(keys["intake"])).json()
    admin = bearer(keys["admin"])
    assert client.get("/v1/tickets", headers=admin).status_code == 200
    assert client.get(f"/v1/tickets/{ticket['id']}", headers=admin).status_code == 200
    assert (
        client.post(f"/v1/tickets/{ticket['id']}/feedback", json={"category": "Loans"}, headers=admin).status_code
        == 200
    )
    assert client.get("/metrics", headers=admin).status_code == 200
    assert client.post("/v1/tickets", json={"body": "card"}, headers=admin).status_code == 403
    assert client.post("/v1/classify", json={"texts": ["card"]}, headers=admin).status_code == 403


def test_apikey_create_knows_the_admin_role(tmp_path, capsys):
    from _service_support import run_cli

    url = f"sqlite:///{tmp_path / 'k.db'}"
    code, out, err = run_cli(["apikey", "create", "--role", "admin", "--name", "ops", "--db", url], capsys)
    assert code == 0 and out.strip().startswith("tt_"), err
    code, out, _ = run_cli(["apikey", "list", "--db", url], capsys)
    assert "admin" in out
