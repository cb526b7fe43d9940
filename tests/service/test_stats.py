"""GET /v1/stats on a small hand-made set (exact counts), its range checks and role, and the
Monitoring page (server-rendered SVG, no external URL, behind the console's sign-in). On SQLite
and PostgreSQL (the `database_url` fixture)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from _service_support import FakeClassifier, issue_key

from ticket_triage.service import crud

MON = datetime(2026, 3, 2, 9, tzinfo=timezone.utc)  # a Monday
TUE = MON + timedelta(days=1)
RANGE = {"from": "2026-03-02T00:00:00", "to": "2026-03-04T00:00:00"}
TEXTS = {  # body -> when; the keyword classifier decides the category (0.9), or Banking Services at 0.3
    "My mortgage escrow doubled": MON,
    "A debt collector calls daily": MON,
    "Please call me back": MON,  # no keyword: 0.3, to review
    "My card was charged twice": MON,
    "The loan interest is wrong": TUE,
    "Second mortgage question, long text": TUE,
}


def seed(client):
    """Six tickets over two days and three corrections by two agents."""
    state = client.app.state.triage
    predictions = FakeClassifier().predict(list(TEXTS))
    ids = {}
    with state.sessions() as session, session.begin():
        for (body, when), prediction in zip(TEXTS.items(), predictions):
            t = crud.create_ticket(
                session,
                data={"body": body, "subject": "Hi" if when == TUE else ""},
                prediction=prediction,
                error=None,
                rules=state.rules,
                model_version="fake-keywords-1",
                idempotency_key=None,
            )
            t.created_at = when
            ids[body] = t
        for body, category, agent, when in [
            ("My mortgage escrow doubled", "Loans", "ann", MON),
            ("Please call me back", "Card Services", "bob", MON),
            ("The loan interest is wrong", "Mortgage", "ann", TUE),
        ]:
            fb = crud.add_feedback(
                session, ticket=ids[body], category=category, agent=agent, note=None, rules=state.rules
            )
            fb.created_at = when + timedelta(hours=1)


def test_stats_per_day_are_exact(client):
    seed(client)
    r = client.get("/v1/stats", params={"period": "day", **RANGE})
    assert r.status_code == 200, r.text
    s = r.json()
    assert [p["period"] for p in s["periods"]] == ["2026-03-02", "2026-03-03"]
    mon, tue = s["periods"]
    assert (mon["tickets"], tue["tickets"], mon["classified"], mon["unclassified"]) == (4, 2, 4, 0)
    assert {c: v["count"] for c, v in mon["categories"].items() if v["count"]} == {
        "Mortgage": 1,
        "Debt Collection": 1,
        "Banking Services": 1,
        "Card Services": 1,
    }
    assert mon["categories"]["Mortgage"]["share"] == 0.25 and mon["categories"]["Loans"]["share"] == 0.0
    assert mon["confidence"]["counts"] == [0, 0, 0, 1, 0, 0, 0, 0, 0, 3]
    assert mon["review"] == {"count": 1, "rate": 0.25} and tue["review"] == {"count": 0, "rate": 0.0}
    assert mon["corrections"]["tickets"] == 2 and mon["corrections"]["rate"] == 0.5
    assert mon["corrections"]["per_category"]["Mortgage"] == {"tickets": 1, "corrected": 1, "rate": 1.0}
    assert mon["corrections"]["per_category"]["Debt Collection"] == {"tickets": 1, "corrected": 0, "rate": 0.0}
    assert mon["corrections"]["per_category"]["Loans"] == {"tickets": 0, "corrected": 0, "rate": None}
    assert tue["corrections"]["per_category"]["Loans"]["corrected"] == 1
    # lengths: Tuesday's texts are "Hi\n\n" + body (Ticket.text)
    tue_lengths = sorted(len("Hi\n\n" + b) for b, w in TEXTS.items() if w == TUE)
    assert tue["length"]["percentiles"]["p50"] == pytest.approx(sum(tue_lengths) / 2)
    assert sum(tue["length"]["histogram"]["counts"]) == 2 and tue["length"]["histogram"]["counts"][0] == 2
    # feedback, by when the agent gave it
    assert mon["feedback"]["agents"] == {
        "ann": {"corrections": 1, "confirmations": 0},
        "bob": {"corrections": 1, "confirmations": 0},
    }
    assert s["agents"] == [
        {"agent": "ann", "corrections": 2, "confirmations": 0},
        {"agent": "bob", "corrections": 1, "confirmations": 0},
    ]
    assert s["top_corrections"] == [
        {"from": "Banking Services", "to": "Card Services", "count": 1},
        {"from": "Loans", "to": "Mortgage", "count": 1},
        {"from": "Mortgage", "to": "Loans", "count": 1},
    ]
    t = s["totals"]
    assert (t["tickets"], t["review"]["count"], t["corrections"]["tickets"]) == (6, 1, 3)
    assert t["categories"]["Mortgage"] == {"count": 2, "share": round(2 / 6, 4)}
    assert t["corrections"]["per_category"]["Mortgage"] == {"tickets": 2, "corrected": 1, "rate": 0.5}
    assert t["length"]["histogram"]["counts"][0] == 6
    assert s["drift"]["status"] in ("too-few-tickets", "collecting-reference", "no-reference")
    assert s["alarms"] == []


def test_stats_per_week_and_empty_periods(client):
    seed(client)
    s = client.get("/v1/stats", params={"period": "week", "from": "2026-02-25T00:00:00", "to": "2026-03-09"}).json()
    assert [p["period"] for p in s["periods"]] == ["2026-02-23", "2026-03-02"]  # Mondays
    assert [p["tickets"] for p in s["periods"]] == [0, 6]
    empty = s["periods"][0]
    assert empty["review"]["rate"] is None and empty["length"]["percentiles"]["p50"] is None
    assert s["periods"][1]["feedback"]["corrections"] == 3


def test_stats_ranges_are_capped_not_refused(client):
    """Schema-valid ranges always answer 200: an empty one has no period, a long one keeps its
    latest 400 periods, one reaching past 9999 stops before it; `notes` says what was changed."""
    empty = client.get("/v1/stats", params={"from": "2026-03-04T00:00:00", "to": "2026-03-02T00:00:00"}).json()
    assert empty["periods"] == [] and "not after" in empty["notes"][0] and empty["totals"]["tickets"] == 0
    long = client.get("/v1/stats", params={"from": "2020-01-01T00:00:00", "to": "2026-01-01T00:00:00"}).json()
    assert len(long["periods"]) == 400 and long["periods"][-1]["period"] == "2025-12-31"
    assert "only the latest 400" in long["notes"][0] and "period=week" in long["notes"][0]
    assert client.get("/v1/stats", params={"period": "month"}).status_code == 422
    early = client.get("/v1/stats", params={"to": "0001-01-03T00:00:00"}).json()  # 30 days back: before the year 1
    assert [p["period"] for p in early["periods"]] == ["0001-01-01", "0001-01-02"]
    end_of_time = {"from": "9999-12-30T00:00:00", "to": "9999-12-31T12:00:00"}
    last_days = client.get("/v1/stats", params=end_of_time).json()  # the last day would end in the year 10000
    assert [p["period"] for p in last_days["periods"]] == ["9999-12-30"] and "9999" in last_days["notes"][-1]
    last_week = client.get("/v1/stats", params={**end_of_time, "period": "week"}).json()
    assert last_week["periods"] == [] and "9999" in last_week["notes"][-1]
    s = client.get("/v1/stats").json()  # default: the last 30 days up to now
    assert len(s["periods"]) == 30 and s["period"] == "day" and s["notes"] == []


def test_stats_needs_an_agent_key(make_client):
    client = make_client(auth=True)
    intake, agent = issue_key(client, "intake", "form"), issue_key(client, "agent", "ann")
    assert client.get("/v1/stats").status_code == 401
    assert client.get("/v1/stats", headers={"Authorization": f"Bearer {intake}"}).status_code == 403
    assert client.get("/v1/stats", headers={"Authorization": f"Bearer {agent}"}).status_code == 200


def test_monitoring_page_renders_svg_charts_without_external_urls(client):
    seed(client)
    page = client.get("/monitoring", params={"period": "day", **RANGE})
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text
    body = html.split("<body>")[1]
    assert "http" not in body and "<script" not in body  # no CDN, no script at all
    assert html.count('<svg class="chart"') == 5 and 'role="img"' in html
    assert "<title" in body and "<desc" in body  # the charts are described
    assert '<th scope="row">ann</th><td>2</td><td>0</td>' in html  # the team view
    assert "<title>2026-03-02: Mortgage 25% of 4</title>" in html  # a bar's title: its share of the day
    assert 'id="drift-status"' in html and 'href="/monitoring"' in html
    assert client.get("/static/monitoring.css").status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_monitoring_page_escapes_and_handles_no_data(client):
    html = client.get("/monitoring").text
    assert "No data in this range" in html and "No drift alarm so far" in html


def test_monitoring_page_needs_the_console_sign_in(make_client):
    client = make_client(auth=True)
    r = client.get("/monitoring", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    agent = issue_key(client, "agent", "ann")
    client.post("/console/login", data={"key": agent})
    page = client.get("/monitoring")
    assert page.status_code == 200 and 'signed in as <strong id="who">ann</strong>' in page.text


def test_monitoring_page_takes_the_forms_dates_and_explains_a_bad_range(client):
    seed(client)
    page = client.get("/monitoring", params={"period": "week", "from": "2026-03-02", "to": "2026-03-09"})
    assert page.status_code == 200 and "6 tickets, 1 weeks from 2026-03-02" in page.text
    assert client.get("/monitoring", params={"from": "", "to": ""}).status_code == 200  # cleared fields: defaults
    bad = client.get("/monitoring", params={"from": "March", "period": "day"})
    assert bad.status_code == 422 and "`from` must be a date like 2026-03-01" in bad.text
    bad = client.get("/monitoring", params={"period": "month"})
    assert bad.status_code == 422 and "period must be day or week" in bad.text
