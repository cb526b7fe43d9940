"""The service under attack (issue 15): streamed body limit, a JSON 500 that keeps the
connection, request ids, security headers, a trusted proxy, storage that disappears."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil

import httpx
import pytest
from _service_support import FakeClassifier, SimplePrediction, issue_key, serving
from fastapi.testclient import TestClient

from ticket_triage.service import Settings, create_app
from ticket_triage.service.middleware import CONSOLE_CSP, DOCS_CSP

LIMIT = 64 * 1024
CHUNK = 16 * 1024
TICKET = {"body": "The debt collector keeps calling me at work."}


class Probe:
    """Wraps an ASGI app: counts the body bytes the app (middleware included) took from the
    server, and notes each request's client address (one address: one connection)."""

    def __init__(self, app):
        self.app, self.body_bytes, self.clients = app, 0, []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.clients.append(tuple(scope["client"]))

        async def counting():
            message = await receive()
            self.body_bytes += len(message.get("body", b""))
            return message

        await self.app(scope, counting, send)


def chunks(total: int, size: int = CHUNK):
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size


# -- 2. the body limit holds on streamed bytes ---------------------------------------------------
def test_a_chunked_body_over_the_limit_is_refused_after_limit_plus_one_chunk(sqlite_url, fake_classifier):
    app = create_app(Settings(database_url=sqlite_url, auth=True, max_request_bytes=LIMIT), classifier=fake_classifier)
    total, handed = 100 * 1024 * 1024, 0  # 100 MB offered, no Content-Length, no API key
    messages = []

    async def receive():
        nonlocal handed
        handed += CHUNK
        return {"type": "http.request", "body": b"x" * CHUNK, "more_body": handed < total}

    async def send(message):
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/tickets",
        "raw_path": b"/v1/tickets",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    assert messages[0]["type"] == "http.response.start" and messages[0]["status"] == 413
    assert handed <= LIMIT + CHUNK  # bounded: nothing read past the first chunk over the limit
    assert b"the limit is 65536" in b"".join(m.get("body", b"") for m in messages[1:])


def test_a_chunked_upload_to_a_live_server_gets_413_and_the_app_stops_reading(sqlite_url, fake_classifier):
    app = create_app(Settings(database_url=sqlite_url, auth=True, max_request_bytes=LIMIT), classifier=fake_classifier)
    probe = Probe(app)
    with serving(probe) as base, httpx.Client(base_url=base, timeout=30) as http:
        r = http.post("/v1/tickets", content=chunks(8 * 1024 * 1024), headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "the limit is 65536" in r.json()["detail"]
        # uvicorn hands the body over as it arrives: a message may join a few TCP reads
        assert LIMIT < probe.body_bytes <= LIMIT + 256 * 1024
        assert http.get("/healthz").status_code == 200
        small = http.post(
            "/v1/tickets", content=iter([json.dumps(TICKET).encode()]), headers={"Content-Type": "application/json"}
        )
        assert small.status_code == 401  # under the limit: on to authentication as before


def test_content_length_over_the_limit_is_refused_before_reading(client):
    r = client.post("/v1/tickets", content=b"x" * (9 * 1024 * 1024), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "request body is 9437184 bytes" in r.json()["detail"]


# -- 6. an unexpected error: JSON 500 with a request id, the connection stays open -----------------
class BrokenPredictions(FakeClassifier):
    """Answers with predictions that have no confidence: the route itself fails (a bug)."""

    def predict(self, texts, batch_size=32):
        return [SimplePrediction("Loans", None, {}) for _ in texts]


def test_an_unexpected_error_is_a_json_500_with_a_logged_request_id_and_keeps_the_connection(sqlite_url, caplog):
    app = create_app(Settings(database_url=sqlite_url, auth=False, max_wait_ms=1), classifier=BrokenPredictions())
    probe = Probe(app)
    with (
        caplog.at_level(logging.ERROR, logger="ticket_triage.service"),
        serving(probe) as base,
        httpx.Client(base_url=base, timeout=10) as http,
    ):
        r = http.post("/v1/classify", json={"texts": ["my loan"]})
        assert r.status_code == 500 and r.headers["content-type"] == "application/json"
        rid = r.json()["request_id"]
        assert rid and r.headers["X-Request-ID"] == rid and "request_id" in r.json()["detail"]
        assert http.get("/healthz").status_code == 200
    assert len(probe.clients) == 2 and probe.clients[0] == probe.clients[1]  # the same connection
    logged = [rec for rec in caplog.records if rid in rec.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info and logged[0].exc_info[0] is TypeError  # with its traceback


def test_every_response_has_a_request_id_and_a_sane_incoming_one_is_kept(client):
    mine = client.get("/healthz", headers={"X-Request-ID": "lb-7f3a.42"})
    assert mine.headers["X-Request-ID"] == "lb-7f3a.42"
    for bad in ["has space", "x" * 200, "evil\u00e9"]:
        got = client.get("/healthz", headers={"X-Request-ID": bad.encode("utf-8")}).headers["X-Request-ID"]
        assert got != bad and len(got) == 32
    ids = {
        client.get("/v1/tickets/999").headers["X-Request-ID"],
        client.post("/v1/tickets", json=TICKET).headers["X-Request-ID"],
    }
    assert len(ids) == 2


# -- 11. security headers, trusted proxy -------------------------------------------------------------
def test_security_headers_on_every_kind_of_response(client):
    responses = [
        client.get("/"),
        client.get("/static/console.js"),
        client.post("/v1/tickets", json=TICKET),
        client.get("/v1/tickets/999"),
        client.post("/v1/tickets", json={}),
        client.get("/nowhere"),
        client.get("/healthz"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 201, 404, 422, 404, 200]
    for r in responses:
        assert r.headers["Content-Security-Policy"] == CONSOLE_CSP, r.url
        assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Referrer-Policy"] == "no-referrer"
    assert "'unsafe-inline'" not in CONSOLE_CSP and "frame-ancestors 'none'" in CONSOLE_CSP
    docs = client.get("/docs")
    assert (
        docs.status_code == 200
        and docs.headers["Content-Security-Policy"] == DOCS_CSP
        and "cdn.jsdelivr.net" not in docs.text  # vendored: /docs works offline (issue 18, defect 4)
        and "/static/vendor/swagger-ui/swagger-ui-bundle.js" in docs.text
    )


def test_the_console_has_no_inline_script_or_style(client):
    html = client.get("/").text + client.get("/", params={"queue": "needs-review"}).text
    assert "<script>" not in html and "<style" not in html and " style=" not in html and " on" + "click=" not in html


def _login_cookie(app, peer: str, headers: dict) -> str:
    with TestClient(app, client=(peer, 40000)) as http:
        agent = issue_key(http, "agent", "ann")
        return http.post("/console/login", data={"key": agent}, headers=headers, follow_redirects=False).headers[
            "set-cookie"
        ]


def test_the_console_cookie_is_secure_behind_a_trusted_tls_proxy_only(sqlite_url, fake_classifier):
    https = {"X-Forwarded-Proto": "https"}
    trusting = create_app(
        Settings(database_url=sqlite_url, auth=True, forwarded_allow_ips="10.0.0.5"), classifier=fake_classifier
    )
    assert "Secure" in _login_cookie(trusting, "10.0.0.5", https)
    assert "Secure" not in _login_cookie(trusting, "10.0.0.9", https)  # anyone else cannot claim https
    assert "Secure" not in _login_cookie(trusting, "10.0.0.5", {})
    default = create_app(Settings(database_url=sqlite_url, auth=True), classifier=fake_classifier)
    assert "Secure" not in _login_cookie(default, "10.0.0.5", https)  # no proxy trusted by default


# -- 9. readiness and intake see the storage ---------------------------------------------------------
@pytest.fixture
def db_in_folder(tmp_path, sqlite_template):
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(sqlite_template, folder / "triage.db")
    return folder


def _stored(db_file) -> int:
    import sqlite3

    with sqlite3.connect(db_file) as conn:
        return conn.execute("SELECT count(*) FROM tickets").fetchone()[0]


def test_deleting_the_database_folder_while_serving_makes_intake_503_and_not_ready(make_client, db_in_folder):
    client = make_client(database_url=f"sqlite:///{db_in_folder / 'triage.db'}")
    assert client.post("/v1/tickets", json=TICKET).status_code == 201
    assert client.get("/readyz").status_code == 200
    shutil.rmtree(db_in_folder)
    r = client.post("/v1/tickets", json=TICKET, headers={"Idempotency-Key": "k1"})
    assert r.status_code == 503 and r.headers["Retry-After"] and "is gone" in r.json()["detail"]
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "is gone" in ready.json()["checks"]["database"]
    assert not db_in_folder.exists()  # the check did not make a new, empty database


def test_a_replaced_database_file_makes_intake_503(make_client, db_in_folder, sqlite_template):
    path = db_in_folder / "triage.db"
    client = make_client(database_url=f"sqlite:///{path}")
    assert client.post("/v1/tickets", json=TICKET).status_code == 201
    shutil.copy(sqlite_template, db_in_folder / "other.db")
    for suffix in ("-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.remove(f"{path}{suffix}")
    os.replace(db_in_folder / "other.db", path)
    r = client.post("/v1/tickets", json=TICKET)
    assert r.status_code == 503 and "was replaced" in r.json()["detail"]
    assert "was replaced" in client.get("/readyz").json()["checks"]["database"]
    assert _stored(path) == 0  # nothing went into the new file either


def test_readyz_is_not_ready_when_the_disk_is_nearly_full(make_client, db_in_folder):
    free_mb = shutil.disk_usage(db_in_folder).free / 2**20
    client = make_client(database_url=f"sqlite:///{db_in_folder / 'triage.db'}", min_free_disk_mb=free_mb * 2)
    r = client.get("/readyz")
    assert r.status_code == 503 and r.headers["Retry-After"] and "MiB free" in r.json()["checks"]["database"]


def test_readyz_runs_a_write_transaction(client, database_url):
    assert client.get("/readyz").json()["checks"]["database"] == "ok"
    state = client.app.state.triage
    from sqlalchemy import create_engine

    if database_url.startswith("sqlite"):  # another connection holds the write lock
        import sqlite3

        path = database_url.split("///", 1)[1]
        state.engine.dispose()
        state.engine = create_engine(database_url, connect_args={"timeout": 0.2})
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            r = client.get("/readyz")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert r.status_code == 503 and "locked" in r.json()["checks"]["database"]
    else:  # a server that refuses writes (a standby, or read-only)
        state.engine = create_engine(database_url, connect_args={"options": "-c default_transaction_read_only=on"})
        r = client.get("/readyz")
        assert r.status_code == 503 and "read-only" in r.json()["checks"]["database"]
    state.engine.dispose()
