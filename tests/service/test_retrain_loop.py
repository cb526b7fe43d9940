"""Corrections exported by the service are read by `triage data prepare` (the retraining loop)."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
from _service_support import LABELS


@pytest.fixture
def database_url(sqlite_url):  # the data layer is covered on both databases elsewhere; SQLite is enough here
    return sqlite_url


WORDS = (
    "the customer wrote about an account problem that needs attention from the right team "
    "card loan mortgage bank debt collector report fee payment balance charged late"
).split()


def test_feedback_export_feeds_triage_data_prepare(make_client, tmp_path):
    pytest.importorskip("duckdb")
    client = make_client()
    rng = random.Random(0)
    corrected = 0
    for i in range(60):
        # distinct texts: near-duplicates (one template, other numbers) would rightly be merged by prepare
        text = " ".join(rng.choice(WORDS) for _ in range(20)) + f" number {i}"
        tid = client.post("/v1/tickets", json={"body": text}).json()["id"]
        ticket = client.post(f"/v1/tickets/{tid}/feedback", json={"category": LABELS[i % len(LABELS)]}).json()
        # the model's own category is a confirmation, which is not exported (only corrections are)
        corrected += ticket["status"] == "corrected"
    export = tmp_path / "feedback.csv"
    export.write_bytes(client.get("/v1/feedback/export").content)
    out = tmp_path / "prepared"
    r = subprocess.run(
        [sys.executable, "-m", "ticket_triage", "data", "prepare", "--input", str(export), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    import pandas as pd

    rows = pd.concat([pd.read_parquet(out / f"{s}.parquet") for s in ("train", "val", "test")])
    assert 40 < corrected < 60 and len(rows) == corrected
    label_col = next(c for c in rows.columns if c in {"label", "category"})
    assert set(rows[label_col].unique()) <= set(LABELS)
