"""Input that once gave 500s (issue 15): integers past the database's range, text that cannot
be encoded, dates at the calendar's ends, deeply nested metadata; the export's formula
neutralisation; and an OpenAPI document that says what the code does. SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json

import pytest
from _service_support import LABELS

BIG = [2**31, 2**63, 2**64, 10**30]
DB_INT_MAX = 2**31 - 1


def post_raw(client, path: str, raw: bytes):
    return client.post(path, content=raw, headers={"content-type": "application/json"})


def assert_422(r, loc: list | None = None):
    assert r.status_code == 422, r.text
    r.content.decode("utf-8")  # the reply itself is valid UTF-8 JSON
    detail = r.json()["detail"]
    if loc is not None:
        assert detail[0]["loc"] == loc, detail
    return detail


def stored(client) -> int:
    return client.get("/v1/tickets").json()["count"]


# -- 1. integers --------------------------------------------------------------------------------
@pytest.mark.parametrize("big", BIG)
def test_ids_and_offsets_past_the_database_range_are_422(client, big):
    assert_422(client.get(f"/v1/tickets/{big}"), ["path", "ticket_id"])
    assert_422(client.post(f"/v1/tickets/{big}/feedback", json={"category": "Loans"}), ["path", "ticket_id"])
    assert_422(client.post(f"/v1/notifications/{big}/retry"), ["path", "notification_id"])
    assert_422(client.get("/v1/tickets", params={"offset": big}), ["query", "offset"])
    assert_422(client.get("/v1/notifications", params={"offset": big}), ["query", "offset"])
    assert_422(client.get("/v1/notifications", params={"ticket_id": big}), ["query", "ticket_id"])
    assert_422(client.get("/", params={"offset": big}), ["query", "offset"])


def test_the_largest_id_is_a_plain_404(client):
    assert client.get(f"/v1/tickets/{DB_INT_MAX}").status_code == 404
    assert client.post(f"/v1/notifications/{DB_INT_MAX}/retry").status_code == 404
    assert client.get("/v1/tickets", params={"offset": DB_INT_MAX}).json()["items"] == []
    assert client.get("/", params={"offset": DB_INT_MAX}).status_code == 200


# -- 3. text that cannot be encoded -------------------------------------------------------------
SURROGATE = b'"a\\ud800b"'


@pytest.mark.parametrize(
    "raw",
    [
        b'{"body": ' + SURROGATE + b"}",
        b'{"body": "ok", "subject": ' + SURROGATE + b"}",
        b'{"body": "ok", "customer_ref": ' + SURROGATE + b"}",
        b'{"body": "ok", "metadata": {"k": ' + SURROGATE + b"}}",
        b'{"body": "ok", "metadata": {' + SURROGATE + b": 1}}",
        b'{"body": "ok", "metadata": {"deep": [{"k": ["x", ' + SURROGATE + b"]}]}}",
        b'{"body": "ok", ' + SURROGATE + b": 1}",  # an unknown field named by a surrogate
        b'{"body": "ok", "channel": ' + SURROGATE + b"}",
        b'{"body": "a\xed\xa0\x80b"}',  # the surrogate as (invalid) UTF-8 bytes
        b'{"body": "caf\xe9"}',  # Latin-1, not UTF-8
        b'{"body": "a\\u0000b"}',  # NUL: PostgreSQL text cannot hold it
    ],
)
def test_unencodable_text_is_422_with_an_encodable_reply_and_nothing_stored(client, raw):
    detail = assert_422(post_raw(client, "/v1/tickets", raw))
    assert "\\ud800" in json.dumps(detail) or "UTF-8" in json.dumps(detail) or "NUL" in json.dumps(detail)
    assert stored(client) == 0


def test_unencodable_text_elsewhere_is_422(client):
    t = client.post("/v1/tickets", json={"body": "card fee"}).json()
    assert_422(
        post_raw(client, f"/v1/tickets/{t['id']}/feedback", b'{"category": "Loans", "note": ' + SURROGATE + b"}"),
        ["body", "note"],
    )
    assert_422(
        post_raw(client, f"/v1/tickets/{t['id']}/feedback", b'{"category": ' + SURROGATE + b"}"), ["body", "category"]
    )
    assert_422(post_raw(client, "/v1/classify", b'{"texts": ["fine", ' + SURROGATE + b"]}"), ["body", "texts", 1])
    assert_422(client.get("/v1/tickets", params={"category": "a\x00b"}), ["query", "category"])
    assert client.get(f"/v1/tickets/{t['id']}").json()["feedback"] == []


def test_a_stored_unreadable_metadata_string_no_longer_breaks_lists(client):
    """Rows stored before this check (a JSON column keeps the escape) are read back escaped."""
    from sqlalchemy import text

    t = client.post("/v1/tickets", json={"body": "card fee", "metadata": {"k": "v"}}).json()
    with client.app.state.triage.engine.begin() as conn:
        conn.execute(
            text("UPDATE tickets SET metadata = :m WHERE id = :id"),
            {"m": '{"k": "a\\ud800b", "\\udfff": 1}', "id": t["id"]},
        )
    r = client.get("/v1/tickets")
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["metadata"] == {"k": "a\\ud800b", "\\udfff": 1}
    assert client.get(f"/v1/tickets/{t['id']}").status_code == 200


# -- 4. dates -----------------------------------------------------------------------------------
FAR = ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "0001-01-01T00:30:00+01:00"]


@pytest.mark.parametrize("date", FAR)
def test_dates_that_leave_the_calendar_in_utc_are_422(client, date):
    assert_422(client.get("/v1/tickets", params={"created_from": date}), ["query", "created_from"])
    assert_422(client.get("/v1/tickets", params={"created_to": date}), ["query", "created_to"])
    r = client.get("/v1/feedback/export", params={"since": date})
    assert_422(r, ["query", "since"])


@pytest.mark.parametrize(
    "date",
    ["0001-01-01T00:00:00-05:00", "9999-12-31T23:59:59+05:00", "0001-01-01T00:00:00", "9999-12-31T23:59:59.999999Z"],
)
def test_the_calendar_ends_themselves_are_fine(client, date):
    client.post("/v1/tickets", json={"body": "card fee"})
    assert client.get("/v1/tickets", params={"created_from": date}).status_code == 200
    assert client.get("/v1/tickets", params={"created_to": date}).status_code == 200
    assert client.get("/v1/feedback/export", params={"since": date}).status_code == 200


def test_a_number_is_not_a_date(client):
    assert_422(client.get("/v1/tickets", params={"created_to": "0.5"}), ["query", "created_to"])
    assert_422(client.get("/v1/feedback/export", params={"since": "1700000000"}), ["query", "since"])


def test_export_reads_the_database_before_sending_200(client, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from ticket_triage.service import crud

    def broken(session, **_):
        raise OperationalError("SELECT", {}, Exception("database is locked"))
        yield  # a generator, like the real one

    monkeypatch.setattr(crud, "corrected_tickets", broken)
    r = client.get("/v1/feedback/export")
    assert r.status_code == 503 and "database is locked" in r.json()["detail"]


# -- 5. nested and large metadata ---------------------------------------------------------------
def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_metadata_nesting_is_bounded(client):
    assert client.post("/v1/tickets", json={"body": "card fee", "metadata": nested(16)}).status_code == 201
    assert_422(client.post("/v1/tickets", json={"body": "card fee", "metadata": nested(17)}), ["body", "metadata"])
    for depth in (100, 500, 900, 1000, 5000, 100_000):
        raw = b'{"body": "x", "metadata": {"a": ' + b"[" * depth + b"]" * depth + b"}}"
        assert_422(post_raw(client, "/v1/tickets", raw))
    assert_422(post_raw(client, "/v1/tickets", b'{"body": "x", "extra": ' + b"[" * 5000 + b"]" * 5000 + b"}"))
    assert stored(client) == 1


def test_metadata_limits_are_settings(make_client):
    client = make_client(metadata_max_depth=2, metadata_max_bytes=100)
    assert client.post("/v1/tickets", json={"body": "card fee", "metadata": {"a": [1]}}).status_code == 201
    detail = assert_422(
        client.post("/v1/tickets", json={"body": "card fee", "metadata": {"a": [[1]]}}), ["body", "metadata"]
    )
    assert "TRIAGE_METADATA_MAX_DEPTH=2" in detail[0]["msg"]
    detail = assert_422(
        client.post("/v1/tickets", json={"body": "card fee", "metadata": {"a": "é" * 60}}), ["body", "metadata"]
    )
    assert "TRIAGE_METADATA_MAX_BYTES=100" in detail[0]["msg"]
    assert stored(client) == 1


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999", b"1" * 5000])
def test_numbers_that_cannot_be_stored_are_422(client, number):
    assert_422(post_raw(client, "/v1/tickets", b'{"body": "x", "metadata": {"n": ' + number + b"}}"))
    assert stored(client) == 0


# -- 10. CSV formula injection ------------------------------------------------------------------
FORMULAS = ['=HYPERLINK("http://evil.example","click")', "+1+2", "-2+3", "@SUM(A1)", "\tindented", "\r=cmd"]


def export_rows(client, **params) -> list[dict]:
    return list(csv.DictReader(io.StringIO(client.get("/v1/feedback/export", params=params).text, newline="")))


def test_export_neutralises_formula_cells(client):
    for body in FORMULAS + ["plain text stays"]:
        t = client.post("/v1/tickets", json={"body": body}).json()
        client.post(f"/v1/tickets/{t['id']}/feedback", json={"category": "Loans"})
    narratives = [row["Consumer complaint narrative"] for row in export_rows(client)]
    assert narratives == ["'" + body for body in FORMULAS] + ["plain text stays"]
    # for retraining: the customer's text, verbatim
    assert [row["Consumer complaint narrative"] for row in export_rows(client, escape_formulas="false")] == FORMULAS + [
        "plain text stays"
    ]


# -- 12. the OpenAPI document -------------------------------------------------------------------
def test_openapi_has_this_models_categories_and_limits(make_client):
    client = make_client(classify_max_texts=7)
    doc = client.get("/openapi.json").json()
    models = doc["components"]["schemas"]
    assert models["FeedbackCreate"]["properties"]["category"]["enum"] == LABELS
    assert models["PredictionPublic"]["properties"]["category"]["enum"] == LABELS
    assert models["ClassifyRequest"]["properties"]["texts"]["maxItems"] == 7
    ticket_id = next(
        p for p in doc["paths"]["/v1/tickets/{ticket_id}"]["get"]["parameters"] if p["name"] == "ticket_id"
    )
    assert ticket_id["schema"]["maximum"] == DB_INT_MAX
    status = next(p for p in doc["paths"]["/v1/tickets"]["get"]["parameters"] if p["name"] == "status")
    assert set(status["schema"]["anyOf"][0]["enum"]) == {
        "routed",
        "needs-review",
        "unclassified",
        "corrected",
        "confirmed",
    }


def test_openapi_documents_every_status_a_route_can_give(client):
    doc = client.get("/openapi.json").json()
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            codes = set(op["responses"])
            if path.startswith("/v1/"):
                assert {"401", "403", "503"} <= codes, (method, path, codes)
            if method == "post" and "requestBody" in op:
                assert {"400", "413", "422"} <= codes, (method, path, codes)
            if "{" in path:
                assert {"404", "422"} <= codes, (method, path, codes)


def test_metrics_documents_its_real_content_type(client):
    from prometheus_client import CONTENT_TYPE_LATEST

    doc = client.get("/openapi.json").json()
    assert list(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == [CONTENT_TYPE_LATEST]
    assert client.get("/metrics").headers["content-type"] == CONTENT_TYPE_LATEST
