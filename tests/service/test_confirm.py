"""Confirm vs correct (issue 18, defects 2 and 3): confirming is not a correction, repeats write
nothing, and the model's confidence is never paired with an agent's category. SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import pytest
from _service_support import LABELS, FakeClassifier, SimplePrediction

from ticket_triage.service.models import Feedback

VAGUE = {"body": "Nobody answers the phone, please call me back.", "channel": "chat"}  # review queue
MORTGAGE = {"subject": "Escrow", "body": "My mortgage escrow doubled."}  # routed, 0.9


def post(client, payload):
    r = client.post("/v1/tickets", json=payload)
    assert r.status_code == 201, r.text
    return r.json()


def feedback_rows(client, ticket_id: int) -> list[Feedback]:
    with client.app.state.triage.sessions() as session:
        return list(session.query(Feedback).filter(Feedback.ticket_id == ticket_id).order_by(Feedback.id))


# -- defect 3: confirming is not a correction ------------------------------------------------------
def test_saving_the_models_category_is_a_confirmation_not_a_correction(client):
    t = post(client, VAGUE)
    assert t["status"] == "needs-review" and t["category"] == "Banking Services" and t["work_state"] == "open"
    r = client.post(f"/v1/tickets/{t['id']}/feedback", json={"category": "Banking Services", "note": "looks right"})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["status"] == "confirmed" and got["category"] == "Banking Services"
    assert got["queue"] == "banking"  # accepted: out of the review queue, to its team
    (fb,) = got["feedback"]
    assert fb["kind"] == "confirmation" and fb["note"] == "looks right" and fb["model_version"] == "fake-keywords-1"
    # not retraining data: the export holds corrections only
    assert list(csv.DictReader(io.StringIO(client.get("/v1/feedback/export").text))) == []
    assert client.get("/v1/tickets", params={"status": "corrected"}).json()["count"] == 0
    assert client.get("/v1/tickets", params={"status": "confirmed"}).json()["count"] == 1
    metrics = client.get("/metrics").text
    assert 'triage_confirmations_total{category="Banking Services"} 1.0' in metrics
    assert 'triage_feedback_total{category="Banking Services"}' not in metrics


def test_a_repeated_save_or_double_click_writes_no_second_record(client):
    t = post(client, MORTGAGE)
    first = client.post(f"/v1/tickets/{t['id']}/feedback", json={"category": "Loans"})
    second = client.post(f"/v1/tickets/{t['id']}/feedback", json={"category": "Loans"})
    assert first.status_code == second.status_code == 200
    assert second.headers.get("idempotent-replayed") == "true"
    assert second.json() == client.get(f"/v1/tickets/{t['id']}").json()
    assert [(f.kind, f.category) for f in feedback_rows(client, t["id"])] == [("correction", "Loans")]
    # saving the (now agent-set) category again, or confirming, after a correction: no record either
    client.post(f"/v1/tickets/{t['id']}/confirm")
    assert client.get(f"/v1/tickets/{t['id']}").json()["status"] == "corrected"
    assert len(feedback_rows(client, t["id"])) == 1
    rows = list(csv.DictReader(io.StringIO(client.get("/v1/feedback/export").text)))
    assert [r["Product"] for r in rows] == ["Loans"]


@pytest.mark.parametrize("category", ["Mortgage", "Loans"])  # a confirmation and a correction
def test_two_identical_saves_at_the_same_moment_write_one_record(client, category):
    """Both requests read the ticket before either commits (a double click's twins, or the same
    Idempotency-Key retried at once): the second finds the ticket changed and records nothing."""
    from ticket_triage.service import crud

    t = post(client, MORTGAGE)
    state = client.app.state.triage
    with state.sessions() as first, state.sessions() as second:
        tickets = [crud.get_ticket(s, ticket_id=t["id"]) for s in (first, second)]
        saved = crud.add_feedback(
            first, ticket=tickets[0], category=category, agent="ann", note=None, rules=state.rules
        )
        first.commit()
        twin = crud.add_feedback(
            second, ticket=tickets[1], category=category, agent="ann", note=None, rules=state.rules
        )
        second.commit()
    assert saved is not None and twin is None
    assert [f.category for f in feedback_rows(client, t["id"])] == [category]


def test_confirm_endpoint_is_idempotent_and_a_later_correction_counts(client):
    t = post(client, VAGUE)
    for _ in range(3):  # a triple click
        r = client.post(f"/v1/tickets/{t['id']}/confirm", json={"note": "ok"})
        assert r.status_code == 200 and r.json()["status"] == "confirmed"
    assert [f.kind for f in feedback_rows(client, t["id"])] == ["confirmation"]
    r = client.post(f"/v1/tickets/{t['id']}/feedback", json={"category": "Card Services"})
    assert r.json()["status"] == "corrected"
    assert [f.kind for f in feedback_rows(client, t["id"])] == ["confirmation", "correction"]


def test_the_same_idempotency_key_records_once_even_for_another_category(client):
    t = post(client, MORTGAGE)
    headers = {"Idempotency-Key": "click-1"}
    client.post(f"/v1/tickets/{t['id']}/feedback", json={"category": "Loans"}, headers=headers)
    r = client.post(f"/v1/tickets/{t['id']}/feedback", json={"category": "Card Services"}, headers=headers)
    assert r.status_code == 200 and r.json()["category"] == "Loans"
    assert len(feedback_rows(client, t["id"])) == 1
    # the key is per ticket: another ticket may use it
    other = post(client, MORTGAGE)
    client.post(f"/v1/tickets/{other['id']}/confirm", headers=headers)
    assert [f.kind for f in feedback_rows(client, other["id"])] == ["confirmation"]


def test_an_unclassified_ticket_cannot_be_confirmed(make_client, fake_classifier):
    fake_classifier.fail = True
    client = make_client()
    t = post(client, VAGUE)
    r = client.post(f"/v1/tickets/{t['id']}/confirm")
    assert r.status_code == 409 and "feedback" in r.json()["detail"]
    assert client.post(f"/v1/tickets/{t['id']}/confirm", json={"surprise": 1}).status_code == 422
    assert client.post("/v1/tickets/999/confirm").status_code == 404
    # setting a category on it is a correction
    assert client.post(f"/v1/tickets/{t['id']}/feedback", json={"category": "Loans"}).json()["status"] == "corrected"


# -- defect 2: the model's confidence stays with the model's category --------------------------------
@dataclass
class LoansAt085(FakeClassifier):
    def predict(self, texts, batch_size=32):
        probs = dict.fromkeys(LABELS, 0.0)
        probs.update({"Loans": 0.85, "Credit Reporting": 0.02, "Mortgage": 0.08, "Card Services": 0.05})
        return [SimplePrediction("Loans", 0.85, probs) for _ in texts]


def test_after_a_correction_the_models_confidence_stays_with_the_models_category(make_client):
    client = make_client(classifier=LoansAt085())
    t = post(client, {"body": "something about credit"})
    assert t["top"] == [
        {"category": "Loans", "probability": pytest.approx(0.85)},
        {"category": "Mortgage", "probability": pytest.approx(0.08)},
        {"category": "Card Services", "probability": pytest.approx(0.05)},
    ]
    got = client.post(f"/v1/tickets/{t['id']}/feedback", json={"category": "Credit Reporting"}).json()
    assert got["category"] == "Credit Reporting" and got["predicted_category"] == "Loans"
    assert got["model_confidence"] == pytest.approx(0.85)  # belongs to predicted_category
    assert got["category_probability"] == pytest.approx(0.02)  # what the model gave the agent's category
    assert got["confidence"] == pytest.approx(0.85) and got["top"][0]["category"] == "Loans"
    listed = client.get("/v1/tickets").json()["items"][0]
    assert listed["model_confidence"] == pytest.approx(0.85) and listed["category_probability"] == pytest.approx(0.02)


def test_an_unclassified_ticket_has_no_model_fields(make_client, fake_classifier):
    fake_classifier.fail = True
    t = post(make_client(), VAGUE)
    assert t["top"] == [] and t["model_confidence"] is None and t["category_probability"] is None


def test_per_agent_counts_keep_confirmations_apart(client):
    from ticket_triage.service import crud

    a, b, c = post(client, VAGUE), post(client, MORTGAGE), post(client, MORTGAGE)
    client.post(f"/v1/tickets/{a['id']}/confirm", json={"agent": "ann"})
    client.post(f"/v1/tickets/{a['id']}/confirm", json={"agent": "ann"})  # a repeat: not counted
    client.post(f"/v1/tickets/{b['id']}/feedback", json={"category": "Loans", "agent": "ann"})
    client.post(f"/v1/tickets/{c['id']}/feedback", json={"category": "Mortgage", "agent": "bob"})  # = confirm
    client.post(f"/v1/tickets/{c['id']}/work", json={"state": "done"})
    with client.app.state.triage.sessions() as session:
        counts = crud.agent_counts(session)
    assert counts["ann"] == {"correction": 1, "confirmation": 1, "done": 0}
    assert counts["bob"] == {"correction": 0, "confirmation": 1, "done": 0}
    assert counts["anonymous"]["done"] == 1  # auth off: the work change is the anonymous caller's
