"""Work states, bulk actions, a ticket's history, queue counts of open work, list order and
filters (issue 18, defects 1 and 7), through the API on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime

from _service_support import LABELS, issue_key

MORTGAGE = {"subject": "Escrow", "body": "My mortgage escrow doubled.", "channel": "email"}
CARD = {"body": "A card fee I never agreed to.", "channel": "web"}
VAGUE = {"body": "Nobody answers the phone, please call me back.", "channel": "chat"}


def post(client, payload, **headers) -> dict:
    r = client.post("/v1/tickets", json=payload, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def work(client, ticket_id, **body):
    return client.post(f"/v1/tickets/{ticket_id}/work", json=body)


def queues(client, **params) -> dict[str, dict]:
    return {q["queue"]: q for q in client.get("/v1/queues", params=params).json()}


# -- work states --------------------------------------------------------------------------------------
def test_work_states_open_assigned_done(client):
    t = post(client, MORTGAGE)
    assert t["work_state"] == "open" and t["assignee"] is None
    r = work(client, t["id"], state="assigned", assignee="ann")
    assert r.status_code == 200 and r.json()["work_state"] == "assigned" and r.json()["assignee"] == "ann"
    r = work(client, t["id"], state="done")
    assert r.json()["work_state"] == "done" and r.json()["assignee"] == "ann"  # who finished it stays
    r = work(client, t["id"], state="open", assignee="bob")
    assert r.json()["work_state"] == "open" and r.json()["assignee"] is None  # open: nobody's
    assert client.get("/v1/tickets", params={"work_state": "open"}).json()["count"] == 1


def test_assigned_without_assignee_is_the_caller(make_client):
    client = make_client(auth=True)
    agent = issue_key(client, "agent", "carol")
    intake = issue_key(client, "intake", "form")
    t = post(client, MORTGAGE, Authorization=f"Bearer {intake}")
    r = client.post(
        f"/v1/tickets/{t['id']}/work", json={"state": "assigned"}, headers={"Authorization": f"Bearer {agent}"}
    )
    assert r.status_code == 200 and r.json()["assignee"] == "carol"
    assert client.post(f"/v1/tickets/{t['id']}/work", json={"state": "done"}).status_code == 401
    r = client.post(
        f"/v1/tickets/{t['id']}/work", json={"state": "done"}, headers={"Authorization": f"Bearer {intake}"}
    )
    assert r.status_code == 403


def test_work_rejects_bad_input(client):
    t = post(client, MORTGAGE)
    assert work(client, t["id"], state="closed").status_code == 422
    assert work(client, t["id"], state="assigned", assignee="").status_code == 422
    assert client.post(f"/v1/tickets/{t['id']}/work", json={}).status_code == 422
    assert work(client, 999, state="done").status_code == 404


# -- defect 7: counts of open work; unknown queue is 404 -----------------------------------------------
def test_queue_counts_are_open_work_and_total(client):
    a, b = post(client, MORTGAGE), post(client, MORTGAGE)
    post(client, VAGUE)
    work(client, a["id"], state="done")
    q = queues(client)
    assert q["mortgage"]["count"] == 1 and q["mortgage"]["total"] == 2
    assert q["mortgage"]["open_by_status"] == {"routed": 1} and q["mortgage"]["latest_id"] == b["id"]
    assert q["needs-review"]["count"] == 1 and q["loans"]["count"] == 0 and q["loans"]["total"] == 0
    # a correction moves the count at once (no stale count until a reload)
    client.post(f"/v1/tickets/{b['id']}/feedback", json={"category": "Loans"})
    q = queues(client)
    assert q["mortgage"]["count"] == 0 and q["loans"]["count"] == 1


def test_queues_since_counts_new_tickets(client):
    first = post(client, MORTGAGE)
    assert queues(client, since=first["id"])["mortgage"]["new"] == 0
    post(client, MORTGAGE)
    post(client, CARD)
    q = queues(client, since=first["id"])
    assert q["mortgage"]["new"] == 1 and q["card-services"]["new"] == 1 and q["loans"]["new"] == 0
    assert queues(client)["mortgage"]["new"] is None
    assert client.get("/v1/queues", params={"since": -1}).status_code == 422


def test_an_unknown_queue_is_404_not_an_empty_list(client):
    r = client.get("/v1/tickets", params={"queue": "nope"})
    assert r.status_code == 404 and "nope" in r.json()["detail"] and "mortgage" in r.json()["detail"]
    ok = client.get("/v1/tickets", params={"queue": "loans"})  # a routing queue with no tickets yet
    assert ok.status_code == 200 and ok.json()["count"] == 0


# -- defect 1: newest first; oldest open first on request -------------------------------------------------
def test_list_is_newest_first_and_pages_go_back_in_time(client):
    ids = [post(client, MORTGAGE)["id"] for _ in range(5)]
    first = client.get("/v1/tickets", params={"limit": 2}).json()
    second = client.get("/v1/tickets", params={"limit": 2, "offset": 2}).json()
    assert [t["id"] for t in first["items"]] == ids[::-1][:2]
    assert [t["id"] for t in second["items"]] == ids[::-1][2:4]  # offset 2 = older tickets
    created = [datetime.fromisoformat(t["created_at"]) for t in first["items"] + second["items"]]
    assert created == sorted(created, reverse=True)


def test_oldest_open_first_puts_done_tickets_last(client):
    ids = [post(client, MORTGAGE)["id"] for _ in range(4)]
    work(client, ids[0], state="done")
    work(client, ids[2], state="assigned", assignee="ann")
    got = [t["id"] for t in client.get("/v1/tickets", params={"sort": "oldest-open"}).json()["items"]]
    assert got == [ids[1], ids[2], ids[3], ids[0]]
    assert client.get("/v1/tickets", params={"sort": "sideways"}).status_code == 422


def test_filters_channel_confidence_and_assignee(client):
    post(client, MORTGAGE)  # email, 0.9
    post(client, CARD)  # web, 0.9
    vague = post(client, VAGUE)  # chat, 0.3
    assert client.get("/v1/tickets", params={"channel": "chat"}).json()["count"] == 1
    assert client.get("/v1/tickets", params={"channel": "pigeon"}).status_code == 422
    low = client.get("/v1/tickets", params={"confidence_max": 0.5}).json()
    assert [t["id"] for t in low["items"]] == [vague["id"]]
    assert client.get("/v1/tickets", params={"confidence_min": 0.5, "confidence_max": 1}).json()["count"] == 2
    assert client.get("/v1/tickets", params={"confidence_min": 0.9}).json()["count"] == 2  # inclusive
    assert client.get("/v1/tickets", params={"confidence_min": 1.5}).status_code == 422
    work(client, vague["id"], state="assigned", assignee="ann")
    assert client.get("/v1/tickets", params={"assignee": "ann"}).json()["count"] == 1


# -- bulk ---------------------------------------------------------------------------------------------
def test_bulk_actions_report_each_ticket(client):
    a, b, c = post(client, VAGUE), post(client, VAGUE), post(client, MORTGAGE)
    r = client.post("/v1/tickets/bulk", json={"ids": [a["id"], b["id"], 999], "action": "confirm"})
    assert r.status_code == 200
    assert r.json()["results"] == [
        {"id": a["id"], "ok": True, "detail": None},
        {"id": b["id"], "ok": True, "detail": None},
        {"id": 999, "ok": False, "detail": "no ticket 999"},
    ]
    assert {client.get(f"/v1/tickets/{i}").json()["status"] for i in (a["id"], b["id"])} == {"confirmed"}
    r = client.post("/v1/tickets/bulk", json={"ids": [a["id"], b["id"]], "action": "confirm"})  # again: no new records
    assert all(x["ok"] for x in r.json()["results"])
    assert all(len(client.get(f"/v1/tickets/{i}").json()["feedback"]) == 1 for i in (a["id"], b["id"]))
    r = client.post("/v1/tickets/bulk", json={"ids": [c["id"]], "action": "correct", "category": "Loans", "note": "n"})
    got = client.get(f"/v1/tickets/{c['id']}").json()
    assert r.json()["results"][0]["ok"] and got["status"] == "corrected" and got["feedback"][0]["note"] == "n"
    client.post("/v1/tickets/bulk", json={"ids": [a["id"], c["id"]], "action": "assign", "assignee": "ann"})
    assert client.get("/v1/tickets", params={"assignee": "ann"}).json()["count"] == 2
    client.post("/v1/tickets/bulk", json={"ids": [a["id"], c["id"]], "action": "done"})
    assert client.get("/v1/tickets", params={"work_state": "done"}).json()["count"] == 2
    client.post("/v1/tickets/bulk", json={"ids": [a["id"]], "action": "reopen"})
    assert client.get(f"/v1/tickets/{a['id']}").json()["work_state"] == "open"


def test_bulk_rejects_bad_requests(client):
    t = post(client, MORTGAGE)
    r = client.post("/v1/tickets/bulk", json={"ids": [t["id"]], "action": "correct"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "correct", "category"]
    r = client.post("/v1/tickets/bulk", json={"ids": [t["id"]], "action": "done", "category": "Loans"})
    assert r.status_code == 422  # category is for correct only
    assert client.get("/v1/tickets/bulk").status_code == 405  # not GET /v1/tickets/{ticket_id}
    r = client.post("/v1/tickets/bulk", json={"ids": [t["id"]], "action": "correct", "category": "Crypto"})
    assert r.status_code == 422 and "Crypto" in r.json()["detail"][0]["msg"]
    assert client.post("/v1/tickets/bulk", json={"ids": [], "action": "done"}).status_code == 422
    assert client.post("/v1/tickets/bulk", json={"ids": [t["id"]], "action": "explode"}).status_code == 422
    assert client.post("/v1/tickets/bulk", json={"ids": list(range(1, 502)), "action": "done"}).status_code == 422
    assert client.post("/v1/tickets/bulk", json={"ids": [2**31], "action": "done"}).status_code == 422


# -- history ------------------------------------------------------------------------------------------
def test_history_lists_prediction_feedback_and_work_in_order(make_client, tmp_path):
    rules = tmp_path / "routing.yaml"
    lines = ["review_queue: needs-review", "default_threshold: 0.5", "routes:"]
    lines += [f"  {c}: {{queue: q-{i}}}" for i, c in enumerate(LABELS) if c != "Loans"]
    lines += ["  Loans: {queue: loans, webhook: 'https://hooks.example.com/loans/secret-token'}"]
    rules.write_text("\n".join(lines) + "\n")
    client = make_client(routing_file=rules, notify=False)
    t = post(client, VAGUE)
    client.post(f"/v1/tickets/{t['id']}/feedback", json={"category": "Loans", "agent": "ann", "note": "a loan"})
    work(client, t["id"], state="assigned", assignee="bob")
    work(client, t["id"], state="done")
    work(client, t["id"], state="done")  # no change: no event
    r = client.get(f"/v1/tickets/{t['id']}/history")
    assert r.status_code == 200, r.text
    events = r.json()["events"]
    assert [e["kind"] for e in events] == ["prediction", "correction", "work", "work"]
    prediction, correction, assigned, done = events
    assert prediction["by"] == "model" and prediction["category"] == "Banking Services"
    assert prediction["model_version"] == "fake-keywords-1"
    assert correction["by"] == "ann" and correction["from"] == "Banking Services" and correction["category"] == "Loans"
    assert correction["note"] == "a loan" and correction["model_version"] == "fake-keywords-1"
    assert assigned["state"] == "assigned" and assigned["assignee"] == "bob" and done["state"] == "done"
    (note,) = r.json()["notifications"]
    assert note["event"] == "rerouted" and "secret-token" not in note["target"]  # redacted as in /v1/notifications
    assert client.get("/v1/tickets/999/history").status_code == 404
