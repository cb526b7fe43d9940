"""Shared by the service tests (a module of its own, not `conftest`, whose name the root
tests/conftest.py also has): labels, a deterministic fake classifier, key issuing."""

from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from _model_support import run_cli  # noqa: F401  (the service tests import it from here)

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

LABELS = ["Credit Reporting", "Debt Collection", "Mortgage", "Card Services", "Loans", "Banking Services"]
KEYWORDS = {
    "credit report": "Credit Reporting",
    "bureau": "Credit Reporting",
    "collector": "Debt Collection",
    "debt": "Debt Collection",
    "mortgage": "Mortgage",
    "escrow": "Mortgage",
    "card": "Card Services",
    "loan": "Loans",
    "checking": "Banking Services",
    "bank": "Banking Services",
}
PG_URL = os.environ.get("TRIAGE_TEST_POSTGRES_URL")


@dataclass
class SimplePrediction:
    category: str
    confidence: float
    probabilities: dict[str, float]

    def to_dict(self) -> dict:
        return {"category": self.category, "confidence": self.confidence, "probabilities": dict(self.probabilities)}


@dataclass
class FakeClassifier:
    """Keyword rules: the first keyword found decides (confidence 0.9); none found: Banking
    Services at 0.3 (below every threshold, so it goes to review). `fail` makes predict raise."""

    labels: list[str] = field(default_factory=lambda: list(LABELS))
    model_version: str = "fake-keywords-1"
    fail: bool = False
    poison: str | None = None  # a text containing this makes its whole batch fail
    batches: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def predict(self, texts: list[str], batch_size: int = 32) -> list[SimplePrediction]:
        with self.lock:
            self.batches.append(len(texts))
        if self.fail:
            raise RuntimeError("model backend crashed")
        if self.poison and any(self.poison in t for t in texts):
            raise ValueError("the model cannot read this text")
        out = []
        for text in texts:
            low = text.lower()
            category = next((c for k, c in KEYWORDS.items() if k in low), None)
            conf = 0.9 if category else 0.3
            category = category or "Banking Services"
            rest = (1 - conf) / (len(self.labels) - 1)
            out.append(
                SimplePrediction(category, conf, {lab: conf if lab == category else rest for lab in self.labels})
            )
        return out


def issue_key(client: TestClient, role: str, name: str) -> str:
    from ticket_triage.service.security import issue_api_key

    state = client.app.state.triage
    with state.sessions() as session, session.begin():
        return issue_api_key(session, name=name, role=role)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app, **config):
    """`app` served by a real uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def head_revision() -> str:
    """The newest shipped migration (tests that upgrade compare with it, not with a fixed id)."""
    from importlib import resources

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("ticket_triage.service").joinpath("migrations")))
    return ScriptDirectory.from_config(cfg).get_current_head()
