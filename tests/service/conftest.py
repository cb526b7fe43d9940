"""Fixtures for the service tests: a deterministic keyword classifier, a database per test
(SQLite file, and PostgreSQL when TRIAGE_TEST_POSTGRES_URL is set), and app/client factories."""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the service extra is not installed: pip install -e '.[serve]'")

from fastapi.testclient import TestClient  # noqa: E402

from ticket_triage.service import Settings, create_app  # noqa: E402

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
            out.append(SimplePrediction(category, conf, {lab: conf if lab == category else rest for lab in self.labels}))
        return out


@pytest.fixture
def fake_classifier() -> FakeClassifier:
    return FakeClassifier()


# -- databases --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite file, copied for each test (faster than migrating each time)."""
    from ticket_triage.service.db import make_engine, upgrade_database

    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade_database(engine)
    with engine.connect() as conn:  # fold the WAL into the main file before copying it
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_database():
    """A fresh PostgreSQL database for this test session (dropped at the end)."""
    if not PG_URL:
        pytest.skip("TRIAGE_TEST_POSTGRES_URL is not set (.ci/run starts PostgreSQL and sets it)")
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'psycopg[binary]'")
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from ticket_triage.service.db import make_engine, upgrade_database

    base = make_url(PG_URL)
    name = f"triage_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = base.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    upgrade_database(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """Each API test runs on SQLite and on PostgreSQL (empty tables each time)."""
    if request.param == "sqlite":
        path = tmp_path / "triage.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_database")
    from sqlalchemy import create_engine

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE feedback, tickets, api_keys RESTART IDENTITY CASCADE")
    engine.dispose()
    return url


@pytest.fixture
def sqlite_url(tmp_path, sqlite_template) -> str:
    path = tmp_path / "triage.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


# -- apps and clients -----------------------------------------------------------------------------
@pytest.fixture
def make_client(database_url, fake_classifier):
    """make_client(**settings) -> a TestClient of a fresh app (lifespan running)."""
    clients = []

    def factory(classifier=None, **overrides) -> TestClient:
        options = {"database_url": database_url, "auth": False, "max_wait_ms": 1.0, "retry_interval_s": 60.0}
        options.update(overrides)
        app = create_app(Settings(**options), classifier=classifier or fake_classifier)
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


def issue_key(client: TestClient, role: str, name: str) -> str:
    from ticket_triage.service.security import issue_api_key

    state = client.app.state.triage
    with state.sessions() as session, session.begin():
        return issue_api_key(session, name=name, role=role)


@pytest.fixture(scope="session")
def tiny_model_folder(tiny_model_dir, tmp_path_factory) -> Path:
    """A real (random, tiny) model folder with the six CFPB labels: `triage serve --model` takes it."""
    from ticket_triage.modeling import ModelMeta, build_model, load_tokenizer, save_model_folder
    from ticket_triage.taxonomy import load_taxonomy

    folder = tmp_path_factory.mktemp("served-model")
    model = build_model(str(tiny_model_dir), LABELS)
    save_model_folder(model, load_tokenizer(str(tiny_model_dir)), folder, ModelMeta(labels=LABELS, max_length=64), load_taxonomy("cfpb-6"))
    return folder
