"""Fixtures for the service tests: a deterministic keyword classifier, a database per test
(SQLite file, and PostgreSQL when TRIAGE_TEST_POSTGRES_URL is set), and app/client factories."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the service extra is not installed: pip install -e '.[serve]'")

from _service_support import LABELS, PG_URL, FakeClassifier  # noqa: E402,F401
from fastapi.testclient import TestClient  # noqa: E402

from ticket_triage.service import Settings, create_app  # noqa: E402


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
        from ticket_triage.service.models import Base

        # every table the models declare (each branch's migration adds some): empty, ids from 1
        tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
        conn.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    engine.dispose()
    return url


@pytest.fixture
def sqlite_url(tmp_path, sqlite_template) -> str:
    path = tmp_path / "triage.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


# -- apps and clients -----------------------------------------------------------------------------
@pytest.fixture
def app_client(database_url):
    """app_client(create_app_kwargs, **settings) -> a TestClient of a fresh app (lifespan running),
    closed at the end of the test; the settings' defaults suit tests (no auth, no batching wait)."""
    clients = []

    def factory(app_kwargs: dict, **overrides) -> TestClient:
        options = {"database_url": database_url, "auth": False, "max_wait_ms": 1.0, "retry_interval_s": 60.0}
        options.update(overrides)
        client = TestClient(create_app(Settings(**options), **app_kwargs))
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def make_client(app_client, fake_classifier):
    """make_client(**settings) -> a TestClient of a fresh app serving the fake classifier."""

    def factory(classifier=None, **overrides) -> TestClient:
        return app_client({"classifier": classifier or fake_classifier}, **overrides)

    return factory


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


@pytest.fixture(scope="session")
def tiny_model_folder(tiny_model_dir, tmp_path_factory) -> Path:
    """A real (random, tiny) model folder with the six CFPB labels: `triage serve --model` takes it."""
    from ticket_triage.modeling import ModelMeta, build_model, load_tokenizer, save_model_folder
    from ticket_triage.taxonomy import load_taxonomy

    folder = tmp_path_factory.mktemp("served-model")
    model = build_model(str(tiny_model_dir), LABELS)
    save_model_folder(
        model,
        load_tokenizer(str(tiny_model_dir)),
        folder,
        ModelMeta(labels=LABELS, max_length=64),
        load_taxonomy("cfpb-6"),
    )
    return folder


# -- a registry of model versions (test_swap, test_shadow, test_admin) --------------------------
@pytest.fixture
def registry_app(app_client):
    """registry_app(registry, loader, **settings) -> a TestClient of an app serving the registry."""

    def factory(registry, loader, **overrides) -> TestClient:
        options = {"registry_dir": registry.root, "registry_poll_s": 0.1, **overrides}
        return app_client({"model_loader": loader}, **options)

    return factory
