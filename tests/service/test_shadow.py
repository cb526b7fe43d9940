"""Shadow mode: a candidate version classifies live tickets off the request path; its results are
recorded in shadow_predictions and never change a ticket's category or queue."""

from __future__ import annotations

from _registry_support import Loader, make_registry, wait_for
from sqlalchemy import func, select

from ticket_triage.service.models import ShadowPrediction, Ticket

TEXTS = ["the debt collector calls daily", "my mortgage escrow is wrong", "card fee", "hello there"]


def _rows(client, version: str | None = None) -> list[ShadowPrediction]:
    with client.app.state.triage.sessions() as session:
        query = select(ShadowPrediction).order_by(ShadowPrediction.id)
        if version:
            query = query.where(ShadowPrediction.model_version == version)
        return list(session.scalars(query).all())


def test_shadow_results_are_recorded_and_never_route(registry_app, tmp_path):
    registry = make_registry(tmp_path)
    registry.set_shadow("v2")
    client = registry_app(registry, Loader(v2={"always": "Loans"}))  # the shadow says Loans for everything
    plain = registry_app(make_registry(tmp_path / "plain"), Loader())  # the same active model, no shadow
    tickets = [client.post("/v1/tickets", json={"body": t}).json() for t in TEXTS]
    expected = [plain.post("/v1/tickets", json={"body": t}).json() for t in TEXTS]
    for got, want in zip(tickets, expected):  # routing is the active model's alone
        assert (got["category"], got["queue"], got["status"], got["model_version"]) == (
            want["category"],
            want["queue"],
            want["status"],
            "v1",
        )
    rows = wait_for(lambda: len(_rows(client)) == len(TEXTS) and _rows(client), what="the shadow rows")
    assert [r.ticket_id for r in rows] == [t["id"] for t in tickets]
    assert {r.model_version for r in rows} == {"v2"} and {r.category for r in rows} == {"Loans"}
    assert [r.active_category for r in rows] == [t["category"] for t in tickets]
    assert all(r.active_version == "v1" and abs(sum(r.probabilities.values()) - 1) < 1e-6 for r in rows)
    with client.app.state.triage.sessions() as session:  # stored tickets unchanged by the shadow
        assert [session.get(Ticket, t["id"]).category for t in tickets] == [t["category"] for t in tickets]
    assert not {t["id"] for t in expected} & {r.ticket_id for r in _rows(plain)}  # no shadow there: no rows

    disagree = 'triage_shadow_predictions_total{outcome="disagree"} 4.0'  # counted just after the rows' commit
    metrics = wait_for(lambda: disagree in (text := client.get("/metrics").text) and text, what="the counters")
    assert 'triage_shadow_predictions_total{outcome="agree"} 0.0' in metrics

    # An agent corrects two tickets to Loans: the shadow was right on both, the active model on none.
    for t in tickets[:2]:
        assert client.post(f"/v1/tickets/{t['id']}/feedback", json={"category": "Loans"}).status_code == 200
    summary = client.get("/v1/admin/shadow").json()
    assert summary == {
        "version": "v2",
        "n": 4,
        "agreement": 0.0,
        "corrected_n": 2,
        "shadow_accuracy": 1.0,
        "active_accuracy": 0.0,
    }
    metrics = client.get("/metrics").text
    assert 'triage_shadow_accuracy{model="shadow"} 1.0' in metrics
    assert 'triage_shadow_accuracy{model="active"} 0.0' in metrics
    assert "triage_shadow_corrected_tickets 2.0" in metrics
    # ... and in the console's Monitoring page
    page = client.get("/monitoring").text
    assert 'id="shadow-version">v2<' in page and "agreement with the serving model 0.0%" in page
    assert "the shadow was right on 100.0%, the serving model on 0.0%" in page


def test_shadow_agreement_and_switching_it_on_and_off(registry_app, tmp_path):
    registry = make_registry(tmp_path, n=3)
    client = registry_app(registry, Loader())
    client.post("/v1/tickets", json={"body": "card"})
    assert client.get("/v1/admin/shadow").json()["version"] is None
    body = client.post("/v1/admin/shadow", json={"version": "v2"}).json()
    assert body["version"] == "v2" and body["n"] == 0 and registry.shadow().version == "v2"
    assert client.get("/v1/admin/model").json()["shadow_serving"] == "v2"
    for t in TEXTS:
        client.post("/v1/tickets", json={"body": t})
    wait_for(lambda: len(_rows(client, "v2")) == len(TEXTS), what="the shadow rows")
    assert client.get("/v1/admin/shadow").json()["agreement"] == 1.0  # the same rules: it always agrees

    response = client.post("/v1/admin/shadow", json={"version": "v1"})
    assert response.status_code == 400 and "active version" in response.json()["detail"]
    assert client.post("/v1/admin/shadow", json={"version": None}).json()["version"] is None
    assert registry.shadow() is None and client.app.state.triage.live.shadow is None
    client.post("/v1/tickets", json={"body": "card"})
    client.app.state.triage.shadow.offer(1, "card", "v1", "Card Services")  # no shadow: a no-op
    assert len(_rows(client)) == len(TEXTS)

    # Promoting the shadow ends its shadowing; a CLI shadow change is followed by polling.
    client.post("/v1/admin/shadow", json={"version": "v2"})
    assert client.post("/v1/admin/model", json={"version": "v2"}).json()["shadow"] is None
    registry.set_shadow("v3")
    wait_for(lambda: client.get("/v1/admin/model").json()["shadow_serving"] == "v3", what="the shadow to follow")


def test_a_failing_shadow_never_fails_intake(registry_app, tmp_path):
    registry = make_registry(tmp_path)
    registry.set_shadow("v2")
    client = registry_app(registry, Loader(v2={"fail": True}))
    codes = [client.post("/v1/tickets", json={"body": t}).status_code for t in TEXTS]
    assert codes == [201] * len(TEXTS)
    wait_for(lambda: "triage_shadow_failures_total 0.0" not in client.get("/metrics").text, what="a shadow failure")
    assert _rows(client) == []
    with client.app.state.triage.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == len(TEXTS)


def test_shadow_mode_can_be_turned_off_in_settings(registry_app, tmp_path):
    registry = make_registry(tmp_path)
    registry.set_shadow("v2")
    loader = Loader()
    client = registry_app(registry, loader, shadow=False)
    client.post("/v1/tickets", json={"body": "card"})
    assert loader.loads == ["v1"] and client.app.state.triage.live.shadow is None
    response = client.post("/v1/admin/shadow", json={"version": "v2"})
    assert response.status_code == 400 and "TRIAGE_SHADOW" in response.json()["detail"]


def test_a_ticket_classified_later_by_the_retry_loop_reaches_the_shadow_too(registry_app, tmp_path):
    registry = make_registry(tmp_path, n=3)
    registry.set_shadow("v3")
    loader = Loader(v1={"fail": True}, v3={"always": "Loans"})  # v1 is down: the ticket waits unclassified
    client = registry_app(registry, loader, retry_interval_s=0.05)
    ticket = client.post("/v1/tickets", json={"body": "escrow"}).json()
    assert ticket["status"] == "unclassified" and _rows(client) == []  # nothing to compare with yet
    assert client.post("/v1/admin/model", json={"version": "v2"}).status_code == 200
    rows = wait_for(lambda: _rows(client, "v3"), what="the shadow row of the reclassified ticket")
    later = client.get(f"/v1/tickets/{ticket['id']}").json()
    assert [(r.ticket_id, r.category, r.active_version, r.active_category) for r in rows] == [
        (ticket["id"], "Loans", "v2", later["category"])
    ]
    assert later["category"] != "Loans" and later["model_version"] == "v2"  # the shadow still never routes
