"""Schemathesis against a live `triage serve` (uvicorn in a subprocess, a tiny random model, an
intake and an agent key): no 5xx and no response outside the OpenAPI document, for a bounded time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("schemathesis", reason="schemathesis is not installed: pip install -e '.[dev]'")

pytestmark = pytest.mark.fuzz
CONFIG = Path(__file__).with_name("schemathesis.toml")
FUZZ_SECONDS = int(os.environ.get("TRIAGE_FUZZ_SECONDS", "45"))  # per database


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _triage(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "ticket_triage", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(params=["sqlite", "postgresql"])
def live_service(request, tiny_model_folder, tmp_path):
    """(base URL, intake key, agent key) of a `triage serve` on 127.0.0.1, on SQLite and on
    PostgreSQL (whose driver refuses more: NUL in text, 64-bit ids)."""
    db = (
        f"sqlite:///{tmp_path / 'triage.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_database")
    )
    keys = {
        role: _triage("apikey", "create", "--role", role, "--name", f"fuzz-{role}", "--db", db).split()[0]
        for role in ("intake", "agent")
    }
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ticket_triage",
            "serve",
            "--model",
            str(tiny_model_folder),
            "--db",
            db,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TRIAGE_NOTIFY": "false"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the service did not get ready in 120 s"
            time.sleep(0.5)
        yield base, keys["intake"], keys["agent"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_schemathesis_finds_no_server_error_or_schema_violation(live_service, tmp_path):
    base, intake_key, agent_key = live_service
    env = {**os.environ, "TRIAGE_INTAKE_KEY": intake_key, "TRIAGE_AGENT_KEY": agent_key}
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "run",
        f"{base}/openapi.json",
        "--max-time",
        str(FUZZ_SECONDS),
        "--seed",
        "1",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    # cwd: schemathesis keeps a cache folder (.schemathesis) in its working directory
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=FUZZ_SECONDS + 300)
    (tmp_path / "report" / "schemathesis.txt").write_text(r.stdout + r.stderr)
    assert r.returncode == 0, r.stdout[-20000:] + r.stderr[-5000:]
