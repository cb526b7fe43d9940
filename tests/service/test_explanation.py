"""GET /v1/tickets/{id}/explanation: the contract's shape, cached per ticket and model version,
computed once under concurrent requests, 404, 503 without a model folder, agent role."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("captum", reason="captum is not installed: pip install -e '.[serve]'")

from _service_support import issue_key  # noqa: E402

TICKET = {"channel": "email", "subject": "Mortgage escrow", "body": "the debt collector called about my loan"}


@pytest.fixture(scope="module")
def explain_folder(tiny_model_dir, tmp_path_factory):
    from _model_support import make_model_folder

    # Mean pooling: a tiny random model whose logits move with the words.
    return make_model_folder(tmp_path_factory.mktemp("explain-served") / "model", tiny_model_dir, pooling="mean")


class CountingExplainer:
    """The real explainer on the tiny model, counting (and optionally slowing) its computations."""

    def __init__(self, folder, delay_s: float = 0.0):
        from ticket_triage.explain import Explainer

        self.inner = Explainer.load(folder, model_version="tiny-explain-1")
        self.delay_s = delay_s
        self.calls: list[str | None] = []
        self.lock = threading.Lock()

    @property
    def labels(self):
        return self.inner.labels

    @property
    def model_version(self):
        return self.inner.model_version

    def explain(self, text, target=None, n_steps=50):
        with self.lock:
            self.calls.append(target)
        time.sleep(self.delay_s)
        return self.inner.explain(text, target=target, n_steps=n_steps)


@pytest.fixture
def make_explained(app_client, fake_classifier, explain_folder):
    def factory(explainer=None, **overrides):
        explainer = explainer or CountingExplainer(explain_folder)
        return app_client({"classifier": fake_classifier, "explainer": explainer}, **overrides), explainer

    return factory


def test_contract_shape_and_cache(make_explained):
    client, explainer = make_explained()
    ticket = client.post("/v1/tickets", json=TICKET).json()
    r = client.get(f"/v1/tickets/{ticket['id']}/explanation")
    assert r.status_code == 200, r.text
    body = r.json()
    assert {"model_version", "target", "method", "tokens", "delta", "cached"} <= set(body)
    assert body["model_version"] == "tiny-explain-1" and body["method"] == "integrated_gradients"
    # The target is the model's category for the ticket (the fake classifier's keyword rules: "collector").
    assert body["target"] == ticket["predicted_category"] == "Debt Collection" and body["cached"] is False
    text = f"{TICKET['subject']}\n\n{TICKET['body']}"
    assert [t["text"] for t in body["tokens"]] == text.split()
    for token in body["tokens"]:
        assert set(token) == {"text", "start", "end", "attribution"}
        assert text[token["start"] : token["end"]] == token["text"]
    total = sum(t["attribution"] for t in body["tokens"])
    assert abs(total - (body["logit"] - body["baseline_logit"])) < 1e-3 and abs(body["delta"]) < 1e-3

    again = client.get(f"/v1/tickets/{ticket['id']}/explanation").json()
    assert again["cached"] is True and again["tokens"] == body["tokens"]
    assert explainer.calls == ["Debt Collection"]


def test_cache_is_in_the_database_per_model_version(make_explained, explain_folder):
    client, first = make_explained()
    ticket_id = client.post("/v1/tickets", json=TICKET).json()["id"]
    assert client.get(f"/v1/tickets/{ticket_id}/explanation").json()["cached"] is False
    # A new process with the same model reads the stored explanation ...
    client2, second = make_explained()
    assert client2.get(f"/v1/tickets/{ticket_id}/explanation").json()["cached"] is True
    assert second.calls == []
    # ... and another model version computes its own.
    other = CountingExplainer(explain_folder)
    other.inner.model_version = "tiny-explain-2"
    client3, _ = make_explained(explainer=other)
    body = client3.get(f"/v1/tickets/{ticket_id}/explanation").json()
    assert body["cached"] is False and body["model_version"] == "tiny-explain-2" and len(other.calls) == 1


def test_concurrent_requests_compute_once(make_explained, explain_folder):
    client, explainer = make_explained(explainer=CountingExplainer(explain_folder, delay_s=0.5))
    ticket_id = client.post("/v1/tickets", json=TICKET).json()["id"]
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: client.get(f"/v1/tickets/{ticket_id}/explanation"), range(4)))
    assert [r.status_code for r in replies] == [200] * 4
    assert len(explainer.calls) == 1
    assert sorted(r.json()["cached"] for r in replies) == [False, True, True, True]


def test_unknown_ticket_is_404(make_explained):
    client, explainer = make_explained()
    r = client.get("/v1/tickets/999/explanation")
    assert r.status_code == 404 and "no ticket 999" in r.json()["detail"]
    assert explainer.calls == []


def test_unclassified_ticket_explains_the_models_own_category(make_explained, fake_classifier):
    client, explainer = make_explained()
    fake_classifier.fail = True
    ticket = client.post("/v1/tickets", json=TICKET).json()
    assert ticket["status"] == "unclassified"
    body = client.get(f"/v1/tickets/{ticket['id']}/explanation").json()
    assert explainer.calls == [None] and body["target"] in explainer.labels


def test_no_model_folder_is_503(make_client):
    client = make_client()  # the fake classifier, injected without a model folder
    ticket_id = client.post("/v1/tickets", json=TICKET).json()["id"]
    r = client.get(f"/v1/tickets/{ticket_id}/explanation")
    assert r.status_code == 503 and "--model DIR" in r.json()["detail"]


def test_explainer_loads_from_the_model_folder(make_client, explain_folder):
    client = make_client(model_dir=explain_folder)  # the fake classifier still serves; the folder explains
    ticket_id = client.post("/v1/tickets", json=TICKET).json()["id"]
    body = client.get(f"/v1/tickets/{ticket_id}/explanation").json()
    assert body["model_version"] == "fake-keywords-1"  # the served version, which tickets record
    assert body["tokens"] and body["cached"] is False


def test_agent_role_required(make_explained):
    client, explainer = make_explained(auth=True)
    intake, agent = issue_key(client, "intake", "web-form"), issue_key(client, "agent", "ann")
    ticket_id = client.post("/v1/tickets", json=TICKET, headers={"Authorization": f"Bearer {intake}"}).json()["id"]
    path = f"/v1/tickets/{ticket_id}/explanation"
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"Authorization": f"Bearer {intake}"}).status_code == 403
    assert client.get(path, headers={"Authorization": f"Bearer {agent}"}).status_code == 200
    assert len(explainer.calls) == 1


def test_migration_creates_and_drops_the_table(tmp_path):
    import sqlalchemy as sa
    from alembic import command

    from ticket_triage.service.db import alembic_config, make_engine, upgrade_database

    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade_database(engine)
    inspector = sa.inspect(engine)
    assert {c["name"] for c in inspector.get_columns("explanations")} == {
        "id",
        "ticket_id",
        "model_version",
        "method",
        "payload",
        "created_at",
    }
    assert [u["column_names"] for u in inspector.get_unique_constraints("explanations")] == [
        ["ticket_id", "model_version", "method"]
    ]
    command.downgrade(alembic_config(engine), "0002")
    assert "explanations" not in sa.inspect(engine).get_table_names()
    engine.dispose()


def test_intake_is_not_held_up_by_an_explanation(make_explained, explain_folder):
    client, explainer = make_explained(explainer=CountingExplainer(explain_folder, delay_s=2.0))
    ticket_id = client.post("/v1/tickets", json=TICKET).json()["id"]
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(client.get, f"/v1/tickets/{ticket_id}/explanation")
        while not explainer.calls:  # the explanation is being computed
            time.sleep(0.01)
        start = time.monotonic()
        assert client.post("/v1/tickets", json=TICKET).status_code == 201
        assert client.get(f"/v1/tickets/{ticket_id}").status_code == 200
        assert time.monotonic() - start < 1.5
        assert not slow.done() and slow.result().status_code == 200


def test_too_many_waiting_is_503(make_explained, explain_folder):
    client, explainer = make_explained(explainer=CountingExplainer(explain_folder, delay_s=1.0), explain_max_pending=1)
    ids = [client.post("/v1/tickets", json=TICKET).json()["id"] for _ in range(2)]
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.get, f"/v1/tickets/{ids[0]}/explanation")
        while not explainer.calls:
            time.sleep(0.01)
        r = client.get(f"/v1/tickets/{ids[1]}/explanation")
        assert r.status_code == 503 and "retry" in r.json()["detail"]
        assert first.result().status_code == 200
    assert client.get(f"/v1/tickets/{ids[1]}/explanation").status_code == 200


def test_documented_in_openapi(make_explained):
    client, _ = make_explained()
    doc = client.get("/openapi.json").json()
    route = doc["paths"]["/v1/tickets/{ticket_id}/explanation"]["get"]
    assert {"200", "404", "503"} <= set(route["responses"])
    assert {"tokens", "delta", "cached", "target", "model_version", "method"} <= set(
        doc["components"]["schemas"]["ExplanationPublic"]["properties"]
    )


def test_a_replica_that_stored_first_wins(make_explained):
    from ticket_triage.service.explanations import _Wanted

    client, _ = make_explained()
    ticket_id = client.post("/v1/tickets", json=TICKET).json()["id"]
    service = client.app.state.triage.explanations
    wanted = _Wanted(ticket_id, "text", None, "v-race")
    first = service._store(wanted, {"tokens": [], "from": "replica 1"})
    second = service._store(wanted, {"tokens": [], "from": "replica 2"})  # the unique key refuses a second row
    assert first["from"] == second["from"] == "replica 1"
