"""`triage retrain` reads what the service stores: its database and its CSV export agree."""

from __future__ import annotations

import pytest
from _service_support import LABELS


@pytest.fixture
def database_url(sqlite_url):  # the reader goes through the service's SQLAlchemy models; SQLite is enough here
    return sqlite_url


def test_database_and_export_give_the_same_latest_corrections(make_client, database_url, tmp_path):
    from ticket_triage.learning.feedback import read_corrections

    client = make_client()
    ids = [
        client.post("/v1/tickets", json={"body": f"=the fee on my card {i} was wrong"}).json()["id"] for i in range(3)
    ]
    client.post(f"/v1/tickets/{ids[0]}/feedback", json={"category": "Loans"})
    client.post(f"/v1/tickets/{ids[1]}/feedback", json={"category": "Mortgage"})
    client.post(f"/v1/tickets/{ids[0]}/feedback", json={"category": "Card Services"})  # the latest wins
    export = tmp_path / "feedback.csv"
    export.write_bytes(client.get("/v1/feedback/export").content)  # formula-guarded, as a person would fetch it

    from_db = read_corrections(database_url, labels=LABELS)
    from_csv = read_corrections(export, labels=LABELS)
    expected = {str(ids[0]): "Card Services", str(ids[1]): "Mortgage"}
    assert dict(zip(from_db["ticket_id"], from_db["label"])) == expected
    assert dict(zip(from_csv["ticket_id"], from_csv["label"])) == expected
    assert sorted(from_db["text"]) == sorted(from_csv["text"])  # the guard's quote is undone
    assert from_db["text"].str.startswith("=the fee").all()
    # the export says when each was corrected, so the CSV's time split is the database's
    newest_last = [str(ids[1]), str(ids[0])]
    for frame in (from_db, from_csv):
        assert list(frame.sort_values("corrected_at", kind="stable")["ticket_id"]) == newest_last
