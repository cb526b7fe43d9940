"""Notifications of routed tickets: the outbox (same transaction as the ticket), webhook and
e-mail delivery to real local servers, retries, skips, and GET /v1/notifications. On SQLite and
on PostgreSQL (the `database_url` fixture)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from _service_support import LABELS, free_port
from sqlalchemy import create_engine, func, select, text, update

from ticket_triage.service import crud
from ticket_triage.service.models import Notification, Ticket
from ticket_triage.service.routing import parse_routing

MORTGAGE = {"subject": "Escrow shortage", "body": "My mortgage servicer raised my escrow payment twice."}
DEBT = {"subject": "Calls at work", "body": "The debt collector keeps calling me at work."}
VAGUE = {"body": "Nobody answers the phone, please call me back."}
SECRET = "whsec-test-0123456789"
FAST = {"notify_poll_s": 0.05, "notify_backoff_s": 0.05, "notify_backoff_max_s": 0.2}


# -- local receivers -----------------------------------------------------------------------------
class WebhookServer:
    """A real HTTP server in a thread: records every POST, answers with the next of `codes`
    (the last one repeats)."""

    def __init__(self, codes=(200,), delay_s=0.0):
        self.codes, self.requests, self.lock, self.delay_s = list(codes), [], threading.Lock(), delay_s
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    code = outer.codes.pop(0) if len(outer.codes) > 1 else outer.codes[0]
                time.sleep(outer.delay_s)
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if code < 300 else b"receiver is down")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/secret-token-abc"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook_server():
    servers = []

    def factory(codes=(200,), delay_s=0.0):
        servers.append(WebhookServer(codes, delay_s))
        return servers[-1]

    yield factory
    for s in servers:
        s.close()


@pytest.fixture
def smtp_server():
    """A real SMTP server (aiosmtpd) on a free local port, keeping every message it receives."""
    pytest.importorskip("aiosmtpd", reason="aiosmtpd is not installed: pip install -e '.[dev]'")
    from aiosmtpd.controller import Controller

    class Sink:
        def __init__(self):
            self.envelopes = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            self.envelopes.append(envelope)
            return "250 Message accepted for delivery"

    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.hostname, controller.port, sink
    controller.stop()


def write_rules(tmp_path, *, webhook=None, email=None, review_webhook=None):
    """Every category routed to its own queue; Mortgage gets `webhook`, Debt Collection `email`."""
    lines = ["review_queue: needs-review", "routes:"]
    if review_webhook:
        lines.insert(1, f"review_webhook: {review_webhook}")
    for c in LABELS:
        extra = ""
        if c == "Mortgage" and webhook:
            extra = f", webhook: '{webhook}'"
        if c == "Debt Collection" and email:
            extra = f", email: {email}"
        lines.append(f"  {c}: {{queue: q-{c.split()[0].lower()}{extra}}}")
    path = tmp_path / "rules.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_for(client, predicate, *, timeout=10.0, **params):
    """Poll GET /v1/notifications until `predicate(items)`; returns the last items."""
    deadline = time.monotonic() + timeout
    while True:
        items = client.get("/v1/notifications", params=params).json()["items"]
        if predicate(items) or time.monotonic() > deadline:
            return items
        time.sleep(0.05)


def final(items):
    return bool(items) and all(n["status"] in ("sent", "failed", "skipped") for n in items)


def metric(client, kind, outcome) -> float:
    line = f'triage_notifications_total{{kind="{kind}",outcome="{outcome}"}} '
    for row in client.get("/metrics").text.splitlines():
        if row.startswith(line):
            return float(row[len(line) :])
    raise AssertionError(f"no metric {line!r}")


# -- webhooks ------------------------------------------------------------------------------------
def test_webhook_is_posted_to_a_local_server_with_a_valid_signature(make_client, webhook_server, tmp_path):
    hook = webhook_server()
    client = make_client(
        routing_file=write_rules(tmp_path, webhook=hook.url),
        webhook_secret=SECRET,
        public_url="https://triage.example.com",
        **FAST,
    )
    ticket = client.post("/v1/tickets", json=MORTGAGE).json()
    assert ticket["queue"] == "q-mortgage" and ticket["status"] == "routed"

    items = wait_for(client, final)
    assert [(n["status"], n["kind"], n["event"], n["attempts"], n["ticket_id"]) for n in items] == [
        ("sent", "webhook", "created", 1, ticket["id"])
    ]
    assert items[0]["sent_at"] and items[0]["last_error"] is None and items[0]["next_attempt_at"] is None
    assert "secret-token-abc" not in items[0]["target"] and items[0]["target"].startswith(
        "http://127.0.0.1:"
    )  # path hidden from the API

    assert len(hook.requests) == 1
    req = hook.requests[0]
    assert req["path"] == "/hooks/secret-token-abc" and req["headers"]["Content-Type"] == "application/json"
    expected = "sha256=" + hmac.new(SECRET.encode(), req["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(req["headers"]["X-Triage-Signature-256"], expected)
    assert req["headers"]["X-Triage-Delivery"] == str(items[0]["id"]) and req["headers"]["X-Triage-Event"] == "created"
    doc = json.loads(req["body"])
    assert (
        doc["ticket_id"] == ticket["id"] and doc["category"] == "Mortgage" and doc["confidence"] == pytest.approx(0.9)
    )
    assert doc["queue"] == "q-mortgage" and doc["status"] == "routed" and doc["event"] == "created"
    assert doc["link"] == "https://triage.example.com/?queue=q-mortgage"
    assert doc["api_url"] == f"https://triage.example.com/v1/tickets/{ticket['id']}"
    assert SECRET not in req["body"].decode()
    assert metric(client, "webhook", "sent") == 1.0 and metric(client, "webhook", "failed") == 0.0


def test_a_new_tickets_webhook_goes_out_without_waiting_for_the_poll(make_client, webhook_server, tmp_path):
    hook = webhook_server()
    client = make_client(
        routing_file=write_rules(tmp_path, webhook=hook.url), notify_poll_s=3600
    )  # the poll alone: an hour
    client.post("/v1/tickets", json=MORTGAGE)
    assert [n["status"] for n in wait_for(client, final, timeout=5)] == ["sent"]


def test_webhook_without_a_secret_is_sent_unsigned(make_client, webhook_server, tmp_path):
    hook = webhook_server()
    client = make_client(routing_file=write_rules(tmp_path, webhook=hook.url), **FAST)
    client.post("/v1/tickets", json=MORTGAGE)
    assert [n["status"] for n in wait_for(client, final)] == ["sent"]
    assert "X-Triage-Signature-256" not in hook.requests[0]["headers"]


def test_a_failing_webhook_is_retried_with_backoff_then_marked_failed(make_client, webhook_server, tmp_path):
    hook = webhook_server(codes=(500,))
    client = make_client(routing_file=write_rules(tmp_path, webhook=hook.url), notify_max_attempts=3, **FAST)
    tid = client.post("/v1/tickets", json=MORTGAGE).json()["id"]
    items = wait_for(client, final, ticket_id=tid)
    assert len(items) == 1
    n = items[0]
    assert n["status"] == "failed" and n["attempts"] == 3 and n["sent_at"] is None
    assert "HTTP 500" in n["last_error"] and "receiver is down" in n["last_error"]
    assert len(hook.requests) == 3
    assert metric(client, "webhook", "retried") == 2.0 and metric(client, "webhook", "failed") == 1.0
    assert metric(client, "webhook", "sent") == 0.0

    # an agent fixes the receiver and sends it again
    hook.codes = [200]
    r = client.post(f"/v1/notifications/{n['id']}/retry")
    assert r.status_code == 200 and r.json()["status"] == "pending" and r.json()["attempts"] == 0
    assert [x["status"] for x in wait_for(client, final, ticket_id=tid)] == ["sent"]
    assert client.post(f"/v1/notifications/{n['id']}/retry").status_code == 409


def test_a_webhook_that_recovers_is_sent_on_a_later_attempt(make_client, webhook_server, tmp_path):
    hook = webhook_server(codes=(503, 503, 200))
    client = make_client(routing_file=write_rules(tmp_path, webhook=hook.url), notify_max_attempts=5, **FAST)
    client.post("/v1/tickets", json=MORTGAGE)
    items = wait_for(client, final)
    assert [(n["status"], n["attempts"], n["last_error"]) for n in items] == [("sent", 3, None)]
    assert len(hook.requests) == 3
    assert len({r["headers"]["X-Triage-Delivery"] for r in hook.requests}) == 1  # one id: receivers can de-duplicate


def test_a_send_interrupted_by_shutdown_is_handed_back_at_once(make_client, webhook_server, database_url, tmp_path):
    hook = webhook_server(delay_s=3.0)
    client = make_client(routing_file=write_rules(tmp_path, webhook=hook.url), **FAST)
    client.post("/v1/tickets", json=MORTGAGE)
    wait_for(client, lambda items: bool(items) and items[0]["status"] == "sending" and hook.requests)
    client.__exit__(None, None, None)  # the service stops while the POST waits for an answer
    engine = create_engine(database_url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT status, attempts, last_error FROM notifications")).one()
    engine.dispose()
    assert (
        row.status == "pending" and row.attempts == 1 and "interrupted" in row.last_error
    )  # due now, not after the lease


def test_a_client_error_is_not_retried(make_client, webhook_server, tmp_path):
    hook = webhook_server(codes=(404,))
    client = make_client(routing_file=write_rules(tmp_path, webhook=hook.url), notify_max_attempts=5, **FAST)
    client.post("/v1/tickets", json=MORTGAGE)
    items = wait_for(client, final)
    assert [(n["status"], n["attempts"]) for n in items] == [("failed", 1)]
    assert "HTTP 404" in items[0]["last_error"] and "not retried" in items[0]["last_error"]


def test_an_unreachable_webhook_is_retried_then_failed(make_client, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    client = make_client(routing_file=write_rules(tmp_path, webhook=url), notify_max_attempts=2, **FAST)
    client.post("/v1/tickets", json=MORTGAGE)
    items = wait_for(client, final)
    assert [(n["status"], n["attempts"]) for n in items] == [("failed", 2)]
    assert "ConnectError" in items[0]["last_error"] and "/hook" not in items[0]["last_error"]


# -- e-mail --------------------------------------------------------------------------------------
def test_email_is_delivered_to_a_local_smtp_server(make_client, smtp_server, tmp_path):
    host, port, sink = smtp_server
    client = make_client(
        routing_file=write_rules(tmp_path, email="debt-team@example.com"),
        smtp_host=host,
        smtp_port=port,
        smtp_from="triage@example.com",
        public_url="https://triage.example.com",
        **FAST,
    )
    ticket = client.post("/v1/tickets", json=DEBT).json()
    assert ticket["queue"] == "q-debt"
    items = wait_for(client, final)
    assert [(n["status"], n["kind"], n["target"]) for n in items] == [("sent", "email", "debt-team@example.com")]
    assert len(sink.envelopes) == 1
    env = sink.envelopes[0]
    assert env.mail_from == "triage@example.com" and env.rcpt_tos == ["debt-team@example.com"]
    from email import message_from_bytes, policy

    msg = message_from_bytes(env.original_content, policy=policy.default)
    assert f"#{ticket['id']}" in msg["Subject"] and "q-debt" in msg["Subject"] and "Debt Collection" in msg["Subject"]
    assert msg["X-Triage-Delivery"] == str(items[0]["id"])
    body = msg.get_content()
    assert "Calls at work" in body and "https://triage.example.com/?queue=q-debt" in body
    assert metric(client, "email", "sent") == 1.0


def test_without_smtp_emails_are_skipped_with_a_reason_not_retried(make_client, tmp_path):
    client = make_client(
        routing_file=write_rules(tmp_path, email="debt-team@example.com"), notify_max_attempts=5, **FAST
    )
    client.post("/v1/tickets", json=DEBT)
    items = wait_for(client, final)
    assert [(n["status"], n["attempts"]) for n in items] == [("skipped", 1)]
    assert "no SMTP server" in items[0]["last_error"] and "TRIAGE_SMTP_HOST" in items[0]["last_error"]
    time.sleep(0.3)  # several poll rounds: still skipped, never tried again
    assert client.get("/v1/notifications").json()["items"][0]["attempts"] == 1
    assert metric(client, "email", "skipped") == 1.0 and metric(client, "email", "failed") == 0.0


def test_smtp_login_needs_an_encrypted_connection():
    from pydantic import ValidationError

    from ticket_triage.service import Settings

    with pytest.raises(ValidationError, match="starttls or ssl"):
        Settings(smtp_host="mail.example.com", smtp_username="u", smtp_password="p")
    assert "p" not in repr(
        Settings(smtp_host="h", smtp_username="u", smtp_password="p", smtp_security="starttls").smtp_password
    )


# -- the outbox: what is enqueued, and when ------------------------------------------------------
def test_the_outbox_row_is_committed_with_the_ticket(make_client, database_url, tmp_path):
    client = make_client(routing_file=write_rules(tmp_path, webhook="https://hooks.example.com/x"), notify=False)
    tid = client.post("/v1/tickets", json=MORTGAGE).json()["id"]
    engine = create_engine(database_url)  # another connection: sees only committed rows
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT ticket_id, kind, event, queue, status, attempts FROM notifications")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [(tid, "webhook", "created", "q-mortgage", "pending", 0)]

    # a ticket transaction that rolls back leaves no notification behind
    state = client.app.state.triage
    pred = client.app.state.triage.classifier.predict([MORTGAGE["body"]])[0]
    with pytest.raises(RuntimeError, match="crash"):
        with state.sessions() as session, session.begin():
            ticket = crud.create_ticket(
                session,
                data=dict(MORTGAGE),
                prediction=pred,
                error=None,
                rules=state.rules,
                model_version="m",
                idempotency_key=None,
            )
            assert (
                session.scalar(
                    select(func.count()).select_from(Notification).where(Notification.ticket_id == ticket.id)
                )
                == 1
            )
            raise RuntimeError("crash before commit")
    with state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 1
        assert session.scalar(select(func.count()).select_from(Notification)) == 1


def test_feedback_that_reroutes_a_ticket_enqueues_a_notification(make_client, tmp_path):
    client = make_client(
        routing_file=write_rules(tmp_path, webhook="https://hooks.example.com/x", email="debt@example.com"),
        notify=False,
    )
    t = client.post("/v1/tickets", json=VAGUE).json()
    assert t["queue"] == "needs-review"
    assert client.get("/v1/notifications").json()["count"] == 0  # the review queue has no target here

    assert client.post(f"/v1/tickets/{t['id']}/feedback", json={"category": "Mortgage"}).status_code == 200
    items = client.get("/v1/notifications", params={"ticket_id": t["id"]}).json()["items"]
    assert [(n["event"], n["kind"], n["queue"], n["status"]) for n in items] == [
        ("rerouted", "webhook", "q-mortgage", "pending")
    ]
    with client.app.state.triage.sessions() as session:
        assert session.get(Notification, items[0]["id"]).payload["previous_queue"] == "needs-review"

    client.post(f"/v1/tickets/{t['id']}/feedback", json={"category": "Mortgage"})  # same queue: nothing new
    assert client.get("/v1/notifications").json()["count"] == 1
    client.post(f"/v1/tickets/{t['id']}/feedback", json={"category": "Debt Collection"})
    items = client.get("/v1/notifications", params={"ticket_id": t["id"]}).json()["items"]
    assert [(n["event"], n["kind"], n["queue"]) for n in items][1:] == [("rerouted", "email", "q-debt")]
    assert (
        client.post(f"/v1/tickets/{t['id']}/feedback", json={"category": "Loans"}).status_code == 200
    )  # no target: none
    assert client.get("/v1/notifications").json()["count"] == 2


def test_a_ticket_classified_later_notifies_its_team(make_client, fake_classifier, tmp_path):
    fake_classifier.fail = True
    client = make_client(
        routing_file=write_rules(tmp_path, webhook="https://hooks.example.com/x"), notify=False, retry_interval_s=3600
    )
    t = client.post("/v1/tickets", json=MORTGAGE).json()
    assert t["status"] == "unclassified" and client.get("/v1/notifications").json()["count"] == 0
    fake_classifier.fail = False
    state = client.app.state.triage
    assert client.portal.call(state.reclassifier.reclassify_pending) == 1
    items = client.get("/v1/notifications").json()["items"]
    assert [(n["ticket_id"], n["event"], n["queue"]) for n in items] == [(t["id"], "classified", "q-mortgage")]


def test_the_review_queue_is_announced_only_when_the_rules_give_it_a_target(make_client, tmp_path):
    client = make_client(
        routing_file=write_rules(tmp_path, review_webhook="https://hooks.example.com/review"), notify=False
    )
    t = client.post("/v1/tickets", json=VAGUE).json()
    items = client.get("/v1/notifications").json()["items"]
    assert [(n["ticket_id"], n["queue"], n["kind"]) for n in items] == [(t["id"], "needs-review", "webhook")]
    with pytest.raises(Exception, match="r.yaml:1: review_email 'nope' is not an e-mail address"):
        parse_routing("review_email: nope\nroutes:\n  A: {queue: a}\n", "r.yaml")


def test_list_filters_and_paginates(make_client, tmp_path):
    client = make_client(
        routing_file=write_rules(tmp_path, webhook="https://hooks.example.com/x", email="d@example.com"), notify=False
    )
    ids = [client.post("/v1/tickets", json=p).json()["id"] for p in (MORTGAGE, DEBT, MORTGAGE)]
    page = client.get("/v1/notifications", params={"limit": 2, "offset": 1}).json()
    assert (
        page["count"] == 3
        and page["limit"] == 2
        and page["offset"] == 1
        and [n["ticket_id"] for n in page["items"]] == ids[1:]
    )
    assert client.get("/v1/notifications", params={"ticket_id": ids[1]}).json()["items"][0]["kind"] == "email"
    assert client.get("/v1/notifications", params={"kind": "webhook"}).json()["count"] == 2
    assert client.get("/v1/notifications", params={"status": "pending"}).json()["count"] == 3
    assert client.get("/v1/notifications", params={"status": "sent"}).json()["count"] == 0
    r = client.get("/v1/notifications", params={"status": "lost"})
    assert (
        r.status_code == 422
        and r.json()["detail"][0]["loc"] == ["query", "status"]
        and "'pending'" in r.json()["detail"][0]["msg"]
    )


# -- several deliverers on one table ---------------------------------------------------------------
def test_a_claimed_notification_is_not_claimed_twice_until_its_lease_runs_out(make_client, tmp_path):
    client = make_client(routing_file=write_rules(tmp_path, webhook="https://hooks.example.com/x"), notify=False)
    client.post("/v1/tickets", json=MORTGAGE)
    sessions = client.app.state.triage.sessions
    with sessions() as a, a.begin():
        first = crud.claim_notifications(a, limit=10, lease_s=60, max_attempts=3)
    with sessions() as b, b.begin():
        assert crud.claim_notifications(b, limit=10, lease_s=60, max_attempts=3) == []
    assert [(n.status, n.attempts) for n in first] == [("sending", 1)]
    # the first deliverer "died": with its lease over, the row is claimed again (attempt 2)
    with sessions() as a, a.begin():
        a.execute(update(Notification).values(next_attempt_at=datetime(2000, 1, 1, tzinfo=timezone.utc)))
    with sessions() as b, b.begin():
        again = crud.claim_notifications(b, limit=10, lease_s=60, max_attempts=3)
        assert [n.attempts for n in again] == [2]
        # the first deliverer's late outcome is ignored: it no longer holds the claim
        assert not crud.finish_notification(b, notification_id=first[0].id, attempt=1, status="sent")
        assert crud.finish_notification(b, notification_id=first[0].id, attempt=2, status="sent")


def test_postgres_skips_rows_locked_by_another_deliverer(make_client, database_url, tmp_path):
    if not database_url.startswith("postgresql"):
        pytest.skip("FOR UPDATE SKIP LOCKED is PostgreSQL's (SQLite has one writer)")
    client = make_client(routing_file=write_rules(tmp_path, webhook="https://hooks.example.com/x"), notify=False)
    for _ in range(3):
        client.post("/v1/tickets", json=MORTGAGE)
    sessions = client.app.state.triage.sessions
    with sessions() as a, a.begin():
        got_a = crud.claim_notifications(a, limit=2, lease_s=60, max_attempts=3)  # uncommitted: rows locked
        with sessions() as b, b.begin():
            got_b = crud.claim_notifications(b, limit=10, lease_s=60, max_attempts=3)  # does not wait, skips them
    assert len(got_a) == 2 and len(got_b) == 1 and {n.id for n in got_a}.isdisjoint({n.id for n in got_b})


# -- one hanging receiver, secrets in logs (issue 15) ------------------------------------------------
class HangingServer:
    """A receiver that accepts each POST and answers only once `release` is set."""

    def __init__(self):
        self.release, self.requests = threading.Event(), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests.append(self.headers.get("X-Triage-Delivery"))
                outer.release.wait(60)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/slow"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def two_webhook_rules(tmp_path, mortgage_url, debt_url):
    path = tmp_path / "two-hooks.yaml"
    lines = ["review_queue: needs-review", "routes:"]
    for c in LABELS:
        hook = {"Mortgage": mortgage_url, "Debt Collection": debt_url}.get(c)
        lines.append(f"  {c}: {{queue: q-{c.split()[0].lower()}" + (f", webhook: '{hook}'" if hook else "") + "}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_hanging_receiver_does_not_hold_up_a_healthy_one(make_client, webhook_server, tmp_path):
    slow, healthy = HangingServer(), webhook_server()
    try:
        client = make_client(
            routing_file=two_webhook_rules(tmp_path, slow.url, healthy.url),
            webhook_timeout_s=60,
            notify_per_target=2,
            **FAST,
        )
        for _ in range(10):
            client.post("/v1/tickets", json=MORTGAGE)
            client.post("/v1/tickets", json=DEBT)
        # all ten to the healthy receiver are delivered while the other one still hangs
        sent = wait_for(client, lambda items: len(items) == 10, timeout=20, kind="webhook", status="sent")
        assert len(sent) == 10 and {n["queue"] for n in sent} == {"q-debt"} and len(healthy.requests) == 10
        assert len(slow.requests) <= 2  # never more than notify_per_target at once to one host
        waiting = client.get("/v1/notifications", params={"kind": "webhook"}).json()["items"]
        assert sorted({n["status"] for n in waiting if n["queue"] == "q-mortgage"}) in (
            ["pending", "sending"],
            ["sending"],
        )
        assert all(n["attempts"] <= 1 for n in waiting)  # handed back untried: no attempt spent waiting
        slow.release.set()  # the receiver recovers: the rest are sent, each once
        items = wait_for(client, lambda items: len(items) == 20, timeout=30, kind="webhook", status="sent")
        assert len(items) == 20 and sorted(slow.requests) == sorted(
            {str(n["id"]) for n in items if n["queue"] == "q-mortgage"}
        )
    finally:
        slow.close()


def test_a_delivery_run_logs_no_secret(make_client, webhook_server, smtp_server, tmp_path, caplog):
    hook = webhook_server(codes=(503, 200))
    token, password = "tok-QUERY-5e3cr3t", "smtp-pa55-w0rd-xyz"
    url = f"{hook.url}?token={token}"
    host, port, _ = smtp_server
    client = make_client(
        routing_file=write_rules(tmp_path, webhook=url, email="debt-team@example.com"),
        webhook_secret=SECRET,
        smtp_host=host,
        smtp_port=port,
        smtp_security="starttls",
        smtp_username="triage",
        smtp_password=password,
        notify_max_attempts=2,
        **FAST,
    )
    with caplog.at_level(logging.DEBUG):  # the root logger: every library's records
        client.post("/v1/tickets", json=MORTGAGE)
        client.post("/v1/tickets", json=DEBT)
        items = wait_for(client, lambda items: len(items) == 2 and final(items))
    assert sorted((n["kind"], n["status"]) for n in items) == [
        ("email", "failed"),
        ("webhook", "sent"),
    ]  # this SMTP server has no STARTTLS
    assert any(
        r.name == "httpx" and "HTTP Request: POST" in r.getMessage() for r in caplog.records
    )  # the line is there, redacted
    logged = caplog.text + "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    for secret in (token, "secret-token-abc", password, SECRET):
        assert secret not in logged, secret
