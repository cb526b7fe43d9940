"""Live model switches: under load from 16 clients, by the admin API, by a CLI promote (polling
registry.json), rollback, and versions that cannot be switched to."""

from __future__ import annotations

import gc
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from _registry_support import CONFIDENCE, Loader, make_registry, wait_for
from sqlalchemy import func, select

from ticket_triage.service.models import Ticket

CLIENTS = 16
PER_CLIENT = 25


def _ticket(client, i: int) -> dict:
    response = client.post("/v1/tickets", json={"subject": f"#{i}", "body": f"my card was charged twice ({i})"})
    return {"code": response.status_code, "body": response.json(), "sent": time.monotonic()}


def test_swap_under_load_of_16_clients_loses_nothing_and_labels_every_ticket(registry_app, tmp_path):
    registry = make_registry(tmp_path)
    loader = Loader(delay_s=0.003)  # batches take a while, so the switch lands among them
    client = registry_app(registry, loader, max_batch_size=8)
    halfway, swapped_at = threading.Event(), {}
    done = []
    lock = threading.Lock()

    def one_client(c: int) -> list[dict]:
        out = []
        for k in range(PER_CLIENT):
            started = time.monotonic()
            result = _ticket(client, c * PER_CLIENT + k)
            result["started"] = started
            out.append(result)
            with lock:
                done.append(1)
                if len(done) == CLIENTS * PER_CLIENT // 2:
                    halfway.set()
        return out

    with ThreadPoolExecutor(CLIENTS + 1) as pool:
        futures = [pool.submit(one_client, c) for c in range(CLIENTS)]
        assert halfway.wait(60)
        response = client.post("/v1/admin/model", json={"version": "v2"})
        swapped_at["t"] = time.monotonic()
        results = [r for f in futures for r in f.result()]

    assert response.status_code == 200, response.text
    assert response.json()["serving"] == "v2" and response.json()["active"]["version"] == "v2"
    assert [r["code"] for r in results].count(201) == CLIENTS * PER_CLIENT  # 0 errors
    versions = [r["body"]["model_version"] for r in results]
    assert set(versions) == {"v1", "v2"}  # the switch happened during the load
    for r in results:  # the recorded version is the one that made the prediction
        assert r["body"]["confidence"] == CONFIDENCE[r["body"]["model_version"]]
        if r["started"] > swapped_at["t"]:  # sent after the switch was answered: the new version
            assert r["body"]["model_version"] == "v2"
    state = client.app.state.triage
    with state.sessions() as session:  # 0 lost: every acknowledged ticket is stored, as answered
        assert session.scalar(select(func.count()).select_from(Ticket)) == CLIENTS * PER_CLIENT
        stored = dict(session.execute(select(Ticket.id, Ticket.model_version)).all())
    assert all(stored[r["body"]["id"]] == r["body"]["model_version"] for r in results)
    # The old model was loaded once, then freed: nothing holds it any more.
    assert loader.loads == ["v1", "v2"]
    gc.collect()
    assert loader.made["v1"][0]() is None
    assert state.model_version == "v2" and state.classifier is loader.made["v2"][0]()
    metrics = client.get("/metrics").text
    assert 'triage_model_info{version="v2"} 1.0' in metrics and 'triage_model_info{version="v1"} 0.0' in metrics
    assert "triage_model_switches_total 1.0" in metrics


def test_a_cli_promote_is_followed_by_polling_the_registry(registry_app, tmp_path):
    registry = make_registry(tmp_path)
    client = registry_app(registry, Loader())
    assert client.post("/v1/tickets", json={"body": "mortgage escrow"}).json()["model_version"] == "v1"
    registry.promote("v2", by="cli:test")  # another process: the service only sees registry.json change
    wait_for(lambda: client.get("/v1/admin/model").json()["serving"] == "v2", what="the service to follow")
    ticket = client.post("/v1/tickets", json={"body": "mortgage escrow"}).json()
    assert ticket["model_version"] == "v2" and ticket["confidence"] == CONFIDENCE["v2"]


def test_rollback_returns_to_the_previous_version(registry_app, tmp_path):
    registry = make_registry(tmp_path, n=3)
    client = registry_app(registry, Loader())
    for version in ("v2", "v3"):
        assert client.post("/v1/admin/model", json={"version": version}).status_code == 200
    body = client.post("/v1/admin/model/rollback").json()
    assert body["serving"] == "v2" and body["active"]["version"] == "v2"
    assert client.post("/v1/tickets", json={"body": "loan"}).json()["model_version"] == "v2"
    assert client.post("/v1/admin/model/rollback").json()["serving"] == "v1"
    actions = [(h["action"], h["version"], h["by"]) for h in client.get("/v1/admin/model").json()["history"]]
    assert actions == [
        ("promote", "v1", "cli"),
        ("promote", "v2", "api:anonymous"),
        ("promote", "v3", "api:anonymous"),
        ("rollback", "v2", "api:anonymous"),
        ("rollback", "v1", "api:anonymous"),
    ]
    response = client.post("/v1/admin/model/rollback")
    assert response.status_code == 400 and "nothing to roll back to" in response.json()["detail"]


def test_a_version_that_does_not_load_changes_nothing(registry_app, tmp_path):
    registry = make_registry(tmp_path, n=3)
    loader = Loader(v2=RuntimeError("weights are corrupt"), v3={"labels": ["Mortgage", "Other"]})
    client = registry_app(registry, loader)
    response = client.post("/v1/admin/model", json={"version": "v2"})
    assert response.status_code == 503 and "v2" in response.json()["detail"] and "corrupt" in response.json()["detail"]
    response = client.post("/v1/admin/model", json={"version": "v3"})
    assert response.status_code == 400 and "other categories" in response.json()["detail"]
    response = client.post("/v1/admin/model", json={"version": "v9"})
    assert response.status_code == 400 and "known versions: v1, v2, v3" in response.json()["detail"]
    assert client.post("/v1/admin/model", json={"version": "latest"}).status_code == 422
    assert registry.active().version == "v1"
    status = client.get("/v1/admin/model").json()
    assert status["serving"] == "v1" and [v["version"] for v in status["versions"]] == ["v1", "v2", "v3"]
    assert status["versions"][0]["metrics"]["macro_f1"] == 0.51
    assert client.post("/v1/tickets", json={"body": "card"}).json()["model_version"] == "v1"


def test_a_single_model_folder_cannot_be_switched(client):
    assert client.get("/v1/admin/model").json()["serving"] == "fake-keywords-1"
    response = client.post("/v1/admin/model", json={"version": "v2"})
    assert response.status_code == 400 and "--registry" in response.json()["detail"]


def test_serving_an_empty_registry_says_what_to_do(tmp_path, sqlite_url):
    import pytest

    from ticket_triage.errors import ConfigError
    from ticket_triage.service import Settings, create_app

    with pytest.raises(ConfigError, match="no model registry"):
        create_app(Settings(database_url=sqlite_url, registry_dir=tmp_path / "none"), model_loader=Loader())
    registry = make_registry(tmp_path, active=None)
    with pytest.raises(ConfigError, match="no active version: `triage models promote"):
        create_app(Settings(database_url=sqlite_url, registry_dir=registry.root), model_loader=Loader())


def test_real_model_folders_switch_live(tiny_model_folder, sqlite_url, tmp_path):
    """The default loader: registry versions are real model folders loaded with Classifier.load."""
    import json

    import pytest
    from fastapi.testclient import TestClient

    from ticket_triage.inference import Classifier
    from ticket_triage.registry import ModelRegistry
    from ticket_triage.service import Settings, create_app

    registry = ModelRegistry(tmp_path / "registry")
    registry.register(tiny_model_folder)
    v2 = registry.register(tiny_model_folder, note="sharper")
    meta = json.loads((v2.path / "triage.json").read_text())
    meta["temperature"] = 0.25  # same weights, other probabilities: the two versions tell apart
    (v2.path / "triage.json").write_text(json.dumps(meta))
    registry.promote("v1")
    text = "I was charged a late fee on my credit card."
    app = create_app(Settings(registry_dir=registry.root, database_url=sqlite_url, auth=False, backend="torch"))
    with TestClient(app) as client:
        first = client.post("/v1/tickets", json={"body": text}).json()
        assert client.post("/v1/admin/model", json={"version": "v2"}).json()["serving"] == "v2"
        second = client.post("/v1/tickets", json={"body": text}).json()
    assert (first["model_version"], second["model_version"]) == ("v1", "v2")
    for ticket, version in ((first, "v1"), (second, "v2")):
        direct = Classifier.load(registry.get(version).path, backend="torch").predict([text])[0]
        assert ticket["confidence"] == pytest.approx(direct.confidence, abs=1e-5)
    assert first["confidence"] != pytest.approx(second["confidence"], abs=1e-4)


def test_shutdown_survives_a_swallowed_cancellation():
    """asyncio.wait_for on Python < 3.12 can swallow a cancel (the batcher waits with it): the
    service's stop cancels its tasks until they end instead of waiting forever."""
    import asyncio

    from ticket_triage.service.tasks import cancel_and_wait

    async def main():
        async def stubborn():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass  # as wait_for does when its awaitable completed meanwhile
            await asyncio.sleep(3600)

        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        await asyncio.wait_for(cancel_and_wait(task), timeout=5)
        assert task.cancelled()

    asyncio.run(main())


def test_a_ticket_classified_later_records_the_version_that_classified_it(registry_app, tmp_path):
    registry = make_registry(tmp_path)
    loader = Loader(v1={"fail": True})  # v1 is down: tickets wait unclassified
    client = registry_app(registry, loader, retry_interval_s=0.05)
    ticket = client.post("/v1/tickets", json={"body": "escrow"}).json()
    assert ticket["status"] == "unclassified" and ticket["model_version"] is None
    assert client.post("/v1/admin/model", json={"version": "v2"}).status_code == 200
    later = wait_for(
        lambda: (t := client.get(f"/v1/tickets/{ticket['id']}").json())["status"] != "unclassified" and t,
        what="the retry loop",
    )
    assert later["model_version"] == "v2" and later["confidence"] == CONFIDENCE["v2"]
