"""The /v1 API end to end through the app (TestClient), on SQLite and on PostgreSQL."""

from __future__ import annotations

import csv
import io
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from _service_support import LABELS

MORTGAGE = {
    "subject": "Escrow shortage",
    "body": "My mortgage servicer raised my escrow payment twice.",
    "channel": "email",
    "customer_ref": "C-1",
    "metadata": {"lang": "en"},
}
VAGUE = {"body": "Nobody answers the phone, please call me back.", "channel": "chat"}


def post(client, payload, **headers):
    return client.post("/v1/tickets", json=payload, headers=headers)


# -- create, read -------------------------------------------------------------------------------
def test_create_ticket_classifies_routes_and_stores(client):
    r = post(client, MORTGAGE)
    assert r.status_code == 201, r.text
    t = r.json()
    assert t["category"] == "Mortgage" and t["queue"] == "mortgage" and t["status"] == "routed"
    assert t["confidence"] == pytest.approx(0.9)
    assert set(t["probabilities"]) == set(LABELS) and sum(t["probabilities"].values()) == pytest.approx(1.0)
    assert t["model_version"] == "fake-keywords-1"
    assert t["channel"] == "email" and t["customer_ref"] == "C-1" and t["metadata"] == {"lang": "en"}
    # committed: a new app on the same database sees it
    got = client.get(f"/v1/tickets/{t['id']}").json()
    assert got["category"] == "Mortgage" and got["subject"] == "Escrow shortage"
    assert datetime.fromisoformat(got["created_at"]).tzinfo is not None


def test_low_confidence_goes_to_review(client):
    t = post(client, VAGUE).json()
    assert t["status"] == "needs-review" and t["queue"] == "needs-review"
    assert t["category"] == "Banking Services" and t["confidence"] == pytest.approx(0.3)


def test_per_category_threshold_from_routing_file(make_client, tmp_path):
    rules = tmp_path / "routing.yaml"
    lines = ["review_queue: triage-desk", "default_threshold: 0.2", "routes:"]
    lines += [f"  {c}: {{queue: team-{i}}}" for i, c in enumerate(LABELS) if c != "Mortgage"]
    lines += ["  Mortgage: {queue: home-loans, threshold: 0.95}"]
    rules.write_text("\n".join(lines) + "\n")
    client = make_client(routing_file=rules)
    assert post(client, MORTGAGE).json()["queue"] == "triage-desk"  # 0.9 < 0.95
    vague = post(client, VAGUE).json()  # 0.3 >= default 0.2
    assert vague["queue"] == f"team-{LABELS.index('Banking Services')}" and vague["status"] == "routed"


def test_get_unknown_ticket_is_404(client):
    r = client.get("/v1/tickets/999")
    assert r.status_code == 404 and "999" in r.json()["detail"]


def test_validation_errors_name_the_field(client):
    r = client.post("/v1/tickets", json={"subject": "no body"})
    assert r.status_code == 422
    assert ["body", "body"] in [e["loc"] for e in r.json()["detail"]]
    r = client.post("/v1/tickets", json={"body": "x", "channel": "pigeon"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "channel"]
    r = client.post("/v1/tickets", json={"body": "x", "surprise": 1})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "surprise"]
    r = client.post("/v1/tickets", json={"body": " \n\t "})
    assert (
        r.status_code == 422
        and r.json()["detail"][0]["loc"] == ["body", "body"]
        and "whitespace" in r.json()["detail"][0]["msg"]
    )
    r = client.get("/v1/tickets/abc")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "ticket_id"]


def test_text_over_64_kib_is_413_with_a_message(client):
    r = post(client, {"body": "x" * (64 * 1024 + 1)})
    assert r.status_code == 413 and "65536" in r.json()["detail"]
    assert client.get("/v1/tickets").json()["count"] == 0
    assert post(client, {"body": "é" * (32 * 1024)}).status_code == 201  # exactly 64 KiB of UTF-8


def test_request_body_over_the_request_limit_is_413(make_client):
    client = make_client(max_request_bytes=4096)
    r = client.post("/v1/classify", json={"texts": ["card " * 2000]})
    assert r.status_code == 413 and "limit" in r.json()["detail"]


# -- idempotency ------------------------------------------------------------------------------------
def test_idempotent_retries_create_one_ticket(client):
    first = post(client, MORTGAGE, **{"Idempotency-Key": "form-42"})
    again = post(client, MORTGAGE, **{"Idempotency-Key": "form-42"})
    assert first.status_code == 201 and again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert client.get("/v1/tickets").json()["count"] == 1
    other = post(client, MORTGAGE, **{"Idempotency-Key": "form-43"})
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


def test_same_key_with_another_body_is_409(client):
    post(client, MORTGAGE, **{"Idempotency-Key": "k1"})
    r = post(client, VAGUE, **{"Idempotency-Key": "k1"})
    assert r.status_code == 409 and "Idempotency-Key" in r.json()["detail"]


def test_concurrent_retries_with_one_key_store_one_ticket(client):
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: post(client, MORTGAGE, **{"Idempotency-Key": "burst"}), range(8)))
    assert sorted(r.status_code for r in results).count(201) == 1
    assert all(r.status_code in (200, 201) for r in results)
    assert len({r.json()["id"] for r in results}) == 1
    assert client.get("/v1/tickets").json()["count"] == 1


def test_tickets_queued_together_share_one_transaction_and_a_reused_key_fails_only_itself(client):
    """Group commit (service/writer.py): what waits for the writer is stored in one transaction;
    a reused Idempotency-Key among them fails that batch, then each is stored alone."""
    import asyncio
    import threading

    from sqlalchemy import event

    from ticket_triage.service.schemas import TicketCreate
    from ticket_triage.service.writer import IdempotencyConflict, NewTicket

    state = client.app.state.triage
    first = post(client, MORTGAGE, **{"Idempotency-Key": "used"}).json()
    commits: list[int] = []  # the writer's only: the notification deliverer commits too, now and then
    event.listen(
        state.engine,
        "commit",
        lambda _conn: commits.append(1) if threading.current_thread().name.startswith("triage-store") else None,
    )
    prediction = state.classifier.predict(["card fee"], batch_size=1)[0]

    def ticket(payload: dict, key: str) -> NewTicket:
        return NewTicket(TicketCreate(**payload).model_dump(mode="json"), prediction, None, key, "v")

    def store_together(tickets: list[NewTicket]) -> list:
        async def together():  # all queued before the writer's next turn: one batch
            return await asyncio.gather(*(state.writer.store(t) for t in tickets), return_exceptions=True)

        return client.portal.call(together)

    fresh = store_together([ticket({"body": f"card fee {i}"}, f"new-{i}") for i in range(6)])
    assert len(commits) == 1
    assert all(created for (_, created) in fresh) and len({t.id for (t, _) in fresh}) == 6

    commits.clear()
    mixed = store_together(
        [
            ticket({"body": "card fee a"}, "a"),
            ticket(MORTGAGE, "used"),
            ticket(VAGUE, "used"),
            ticket({"body": "card fee b"}, "b"),
        ]
    )
    (a, a_created), (retry, retry_created), conflict, (b, b_created) = mixed
    assert a_created and b_created and a.id != b.id
    assert retry.id == first["id"] and not retry_created
    assert isinstance(conflict, IdempotencyConflict) and "different ticket" in str(conflict)
    assert client.get("/v1/tickets").json()["count"] == 1 + 6 + 2


def test_a_database_outage_is_a_503_with_a_message_not_a_traceback(client):
    from sqlalchemy.exc import OperationalError

    writer = client.app.state.triage.writer  # where new tickets meet the database
    working = writer.sessions

    def broken():
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    writer.sessions = broken
    try:
        r = post(client, MORTGAGE, **{"Idempotency-Key": "outage"})
    finally:
        writer.sessions = working
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert "disk I/O error" in r.json()["detail"] and "nothing was stored" in r.json()["detail"]
    again = post(client, MORTGAGE, **{"Idempotency-Key": "outage"})  # the retry, once it is back
    assert again.status_code == 201 and client.get("/v1/tickets").json()["count"] == 1


# -- listing ---------------------------------------------------------------------------------------
def test_list_filters_and_pagination(client):
    for body in ["my mortgage escrow", "debt collector calls", "card fee", "mortgage payment", "hello?"]:
        post(client, {"body": body})
    page = client.get("/v1/tickets", params={"limit": 2}).json()  # newest first (issue 18, defect 1)
    assert page["count"] == 5 and [t["id"] for t in page["items"]] == [5, 4]
    page = client.get("/v1/tickets", params={"limit": 2, "offset": 4}).json()
    assert [t["id"] for t in page["items"]] == [1]
    by_queue = client.get("/v1/tickets", params={"queue": "mortgage"}).json()
    assert by_queue["count"] == 2 and {t["category"] for t in by_queue["items"]} == {"Mortgage"}
    assert client.get("/v1/tickets", params={"category": "Debt Collection"}).json()["count"] == 1
    assert client.get("/v1/tickets", params={"status": "needs-review"}).json()["count"] == 1
    now = datetime.now(timezone.utc)
    assert (
        client.get("/v1/tickets", params={"created_from": (now - timedelta(minutes=5)).isoformat()}).json()["count"]
        == 5
    )
    assert (
        client.get("/v1/tickets", params={"created_from": (now + timedelta(minutes=5)).isoformat()}).json()["count"]
        == 0
    )
    assert (
        client.get("/v1/tickets", params={"created_to": (now - timedelta(minutes=5)).isoformat()}).json()["count"] == 0
    )
    # another time zone, same instant
    later = (now + timedelta(minutes=5)).astimezone(timezone(timedelta(hours=-5))).isoformat()
    assert client.get("/v1/tickets", params={"created_to": later}).json()["count"] == 5


def test_list_rejects_bad_filters(client):
    r = client.get("/v1/tickets", params={"status": "lost"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "status"]
    assert client.get("/v1/tickets", params={"limit": 0}).status_code == 422
    assert client.get("/v1/tickets", params={"created_from": "yesterday"}).status_code == 422


def test_queues_lists_every_routing_queue_with_counts(client):
    post(client, MORTGAGE)
    post(client, VAGUE)
    queues = {q["queue"]: q for q in client.get("/v1/queues").json()}
    assert queues["mortgage"]["count"] == 1 and queues["needs-review"]["count"] == 1
    assert queues["loans"]["count"] == 0 and queues["mortgage"]["open_by_status"] == {"routed": 1}


# -- feedback and export ------------------------------------------------------------------------------
def test_feedback_reroutes_and_keeps_the_correction(client):
    t = post(client, VAGUE).json()
    r = client.post(
        f"/v1/tickets/{t['id']}/feedback", json={"category": "Card Services", "agent": "ann", "note": "about a card"}
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["category"] == "Card Services" and got["queue"] == "card-services" and got["status"] == "corrected"
    assert got["predicted_category"] == "Banking Services"
    (fb,) = got["feedback"]
    assert (
        fb["agent"] == "ann"
        and fb["previous_category"] == "Banking Services"
        and fb["previous_queue"] == "needs-review"
    )
    assert fb["queue"] == "card-services" and fb["note"] == "about a card"
    assert abs(datetime.fromisoformat(fb["created_at"]) - datetime.now(timezone.utc)) < timedelta(minutes=1)
    assert client.get("/v1/tickets", params={"queue": "card-services"}).json()["count"] == 1
    # a second correction is kept too
    client.post(f"/v1/tickets/{t['id']}/feedback", json={"category": "Loans"})
    assert [f["category"] for f in client.get(f"/v1/tickets/{t['id']}").json()["feedback"]] == [
        "Card Services",
        "Loans",
    ]


def test_feedback_errors(client):
    t = post(client, MORTGAGE).json()
    r = client.post(f"/v1/tickets/{t['id']}/feedback", json={"category": "Crypto"})
    assert (
        r.status_code == 422
        and r.json()["detail"][0]["loc"] == ["body", "category"]
        and "Crypto" in r.json()["detail"][0]["msg"]
    )
    assert client.post("/v1/tickets/999/feedback", json={"category": "Loans"}).status_code == 404
    assert client.post(f"/v1/tickets/{t['id']}/feedback", json={}).status_code == 422


def test_export_is_cfpb_csv_of_corrected_tickets(client):
    a = post(client, {"subject": "Card", "body": 'Wrong fee, line one,\n"quoted" line two'}).json()
    post(client, MORTGAGE)  # not corrected: not exported
    client.post(f"/v1/tickets/{a['id']}/feedback", json={"category": "Banking Services"})
    r = client.get("/v1/feedback/export")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 1
    row = rows[0]
    assert {"Date received", "Product", "Consumer complaint narrative", "Complaint ID"} <= set(row)
    assert row["Product"] == "Banking Services" and row["Complaint ID"] == str(a["id"])
    assert row["Consumer complaint narrative"] == 'Card\n\nWrong fee, line one,\n"quoted" line two'
    assert row["Date received"] == datetime.now(timezone.utc).date().isoformat()
    # the shipped taxonomy maps the exported Product (a category name) onto itself
    from ticket_triage.taxonomy import load_taxonomy

    assert load_taxonomy("cfpb-6").category_of(row["Product"]) == "Banking Services"
    since = (datetime.now(timezone.utc) + timedelta(minutes=1)).isoformat()
    assert len(list(csv.DictReader(io.StringIO(client.get("/v1/feedback/export", params={"since": since}).text)))) == 0


# -- classify --------------------------------------------------------------------------------------
def test_classify_one_and_many_stores_nothing(client):
    r = client.post("/v1/classify", json={"texts": ["credit report error", "hi"]})
    assert r.status_code == 200
    body = r.json()
    assert body["model_version"] == "fake-keywords-1"
    first, second = body["predictions"]
    assert (
        first["category"] == "Credit Reporting" and first["queue"] == "credit-reporting" and not first["needs_review"]
    )
    assert second["needs_review"] and second["queue"] == "needs-review"
    assert client.get("/v1/tickets").json()["count"] == 0


def test_classify_limits(client):
    assert client.post("/v1/classify", json={"texts": ["card"] * 64}).status_code == 200
    r = client.post("/v1/classify", json={"texts": ["card"] * 65})  # the OpenAPI maxItems: a validation error
    assert (
        r.status_code == 422
        and r.json()["detail"][0]["loc"] == ["body", "texts"]
        and "64" in r.json()["detail"][0]["msg"]
    )
    r = client.post("/v1/classify", json={"texts": ["ok", "x" * (64 * 1024 + 1)]})
    assert r.status_code == 413 and "texts[1]" in r.json()["detail"]
    assert client.post("/v1/classify", json={"texts": []}).status_code == 422
    r = client.post("/v1/classify", json={"texts": ["ok", "  "]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "texts", 1]


def test_classify_reports_a_model_failure_as_503(client, fake_classifier):
    fake_classifier.fail = True
    r = client.post("/v1/classify", json={"texts": ["card"]})
    assert r.status_code == 503 and "RuntimeError" in r.json()["detail"]


# -- model failures: stored unclassified, classified later ---------------------------------------------
def test_model_failure_keeps_the_ticket_unclassified_then_the_retry_loop_classifies_it(make_client, fake_classifier):
    fake_classifier.fail = True
    client = make_client(retry_interval_s=0.05)
    r = post(client, MORTGAGE)
    assert r.status_code == 201
    t = r.json()
    assert t["status"] == "unclassified" and t["category"] is None and t["queue"] == "needs-review"
    assert client.get("/v1/tickets", params={"status": "unclassified"}).json()["count"] == 1
    fake_classifier.fail = False
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        got = client.get(f"/v1/tickets/{t['id']}").json()
        if got["status"] != "unclassified":
            break
        time.sleep(0.05)
    assert got["status"] == "routed" and got["category"] == "Mortgage" and got["queue"] == "mortgage"
    assert got["model_version"] == "fake-keywords-1"
    assert "triage_tickets_reclassified_total 1.0" in client.get("/metrics").text


def test_unclassified_tickets_are_classified_on_the_next_good_request(make_client, fake_classifier):
    fake_classifier.fail = True
    client = make_client(retry_interval_s=3600)  # the timer will not fire during this test
    ids = [post(client, {"body": f"loan number {i}"}).json()["id"] for i in range(3)]
    fake_classifier.fail = False
    post(client, MORTGAGE)  # succeeds, and wakes the retry
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and client.get("/v1/tickets", params={"status": "unclassified"}).json()["count"]:
        time.sleep(0.05)
    assert [client.get(f"/v1/tickets/{i}").json()["category"] for i in ids] == ["Loans"] * 3


def test_a_ticket_the_model_cannot_read_blocks_neither_batch_neighbours_nor_the_retry(make_client, fake_classifier):
    fake_classifier.fail = True
    client = make_client(retry_interval_s=0.05, max_batch_size=4)
    fake_classifier.poison = "POISON"
    ids = [
        post(client, {"body": b}).json()["id"]
        for b in ["POISON card", "card one", "loan two", "mortgage three", "debt four"]
    ]
    fake_classifier.fail = False
    deadline = time.monotonic() + 5
    while (
        time.monotonic() < deadline and client.get("/v1/tickets", params={"status": "unclassified"}).json()["count"] > 1
    ):
        time.sleep(0.05)
    left = client.get("/v1/tickets", params={"status": "unclassified"}).json()["items"]
    assert [t["id"] for t in left] == [ids[0]]
    assert [client.get(f"/v1/tickets/{i}").json()["category"] for i in ids[1:]] == [
        "Card Services",
        "Loans",
        "Mortgage",
        "Debt Collection",
    ]
    # and concurrent new tickets next to a poisoned one are classified
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        out = list(
            pool.map(lambda b: post(client, {"body": b}).json()["status"], ["POISON x", "card a", "card b", "card c"])
        )
    assert out == ["unclassified", "routed", "routed", "routed"]


def test_tickets_left_unclassified_by_a_previous_run_are_classified_at_start(
    make_client, fake_classifier, database_url
):
    fake_classifier.fail = True
    post(make_client(retry_interval_s=3600), MORTGAGE)
    from _service_support import FakeClassifier

    fresh = make_client(classifier=FakeClassifier(), retry_interval_s=3600)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and fresh.get("/v1/tickets/1").json()["status"] == "unclassified":
        time.sleep(0.05)
    assert fresh.get("/v1/tickets/1").json()["category"] == "Mortgage"


# -- health, readiness, metrics, docs ------------------------------------------------------------------
def test_health_ready_metrics_docs(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"model": "ok", "database": "ok"}
    post(client, MORTGAGE)
    post(client, VAGUE)
    text = client.get("/metrics").text
    assert 'triage_http_requests_total{method="POST",route="/v1/tickets",status="201"} 2.0' in text
    assert "triage_http_request_duration_seconds_bucket" in text
    assert 'triage_predictions_total{category="Mortgage"} 1.0' in text
    assert "triage_review_rate 0.5" in text
    assert "triage_batch_size_count" in text
    assert client.get("/docs").status_code == 200
    assert "/v1/tickets" in client.get("/openapi.json").json()["paths"]


def test_readyz_is_503_when_the_database_is_gone(client):
    client.app.state.triage.engine.dispose()
    state = client.app.state.triage
    from sqlalchemy import create_engine

    state.engine = create_engine("postgresql+psycopg://nobody:x@127.0.0.1:1/none", connect_args={"connect_timeout": 1})
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["database"].startswith("unreachable")
