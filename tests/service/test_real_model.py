"""The service with the real `ticket_triage.Classifier`: in process, and `triage serve` as a
subprocess on 127.0.0.1 (CLI, migrations at start, uvicorn, API keys made by the CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
from _service_support import LABELS, free_port

try:  # the inference stage is developed alongside; say so plainly if it is missing
    from ticket_triage.inference import Classifier
except ImportError as exc:  # pragma: no cover
    Classifier = None
    REASON = f"ticket_triage.inference.Classifier is not importable yet ({exc})"
else:
    REASON = ""

pytestmark = pytest.mark.skipif(Classifier is None, reason=REASON or "n/a")


def test_create_app_loads_the_model_folder(tiny_model_folder, sqlite_url):
    from fastapi.testclient import TestClient

    from ticket_triage.service import Settings, create_app

    app = create_app(Settings(model_dir=tiny_model_folder, database_url=sqlite_url, auth=False))
    with TestClient(app) as client:
        t = client.post(
            "/v1/tickets", json={"subject": "card", "body": "I was charged a late fee on my credit card."}
        ).json()
        assert t["category"] in LABELS and 0 < t["confidence"] <= 1
        assert sum(t["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert t["model_version"] == app.state.triage.classifier.model_version != ""
        preds = client.post("/v1/classify", json={"texts": ["mortgage escrow", "debt collector"] * 5}).json()[
            "predictions"
        ]
        assert len(preds) == 10 and preds[0]["category"] == preds[2]["category"]
        # what the service says equals what the library says
        direct = Classifier.load(tiny_model_folder).predict(["mortgage escrow"])[0]
        assert preds[0]["confidence"] == pytest.approx(direct.confidence, abs=1e-5)


def test_triage_serve_subprocess(tiny_model_folder, tmp_path):
    db = f"sqlite:///{tmp_path / 'served.db'}"
    triage = [sys.executable, "-m", "ticket_triage"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    intake = subprocess.run(
        [*triage, "apikey", "create", "--role", "intake", "--name", "form", "--db", db],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.strip()
    agent = subprocess.run(
        [*triage, "apikey", "create", "--role", "agent", "--name", "ann", "--db", db],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.strip()
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [*triage, "serve", "--model", str(tiny_model_folder), "--db", db, "--port", str(port), "--max-batch-size", "8"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "triage serve did not become ready"
            time.sleep(0.2)
        with httpx.Client(base_url=base, timeout=10) as api:
            assert api.post("/v1/tickets", json={"body": "x y"}).status_code == 401
            r = api.post(
                "/v1/tickets",
                json={"body": "My bank closed my checking account."},
                headers={"Authorization": f"Bearer {intake}", "Idempotency-Key": "a1"},
            )
            assert r.status_code == 201, r.text
            tid = r.json()["id"]
            assert (
                api.post(
                    "/v1/tickets",
                    json={"body": "My bank closed my checking account."},
                    headers={"Authorization": f"Bearer {intake}", "Idempotency-Key": "a1"},
                ).json()["id"]
                == tid
            )
            got = api.get(f"/v1/tickets/{tid}", headers={"Authorization": f"Bearer {agent}"}).json()
            assert got["category"] in LABELS and got["queue"]
            assert "triage_batch_size_bucket" in api.get("/metrics", headers={"Authorization": f"Bearer {agent}"}).text
            assert (
                api.get("/docs").status_code == 401
                and api.get("/docs", headers={"Authorization": f"Bearer {agent}"}).status_code == 200
            )
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
    logged = (tmp_path / "serve.log").read_text()
    assert intake not in logged and agent not in logged  # no secrets in logs
    assert "POST /v1/tickets" in logged  # the access log is there, keys are not
