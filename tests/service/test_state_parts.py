"""The parts ServiceState is built from (writer, reclassifier, key cache) stand on their own."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from ticket_triage.service.keycache import MAX_ENTRIES, KeyCache


def test_the_writer_imports_neither_the_state_nor_the_web_framework():
    # writer.py is storage logic: no import cycle with state.py, and HTTP errors belong to the routes.
    code = (
        "import sys; import ticket_triage.service.writer, ticket_triage.service.reclassify; "
        "bad = [m for m in ('ticket_triage.service.state', 'fastapi') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_key_cache_expires_entries():
    cache = KeyCache(ttl_s=0.05)
    cache.put("h", "ann")
    assert cache.get("h") == "ann" and cache.get("other") is None
    time.sleep(0.08)
    assert cache.get("h") is None


def test_key_cache_with_ttl_zero_caches_nothing():
    cache = KeyCache(ttl_s=0)
    cache.put("h", "ann")
    assert cache.get("h") is None


def test_key_cache_stays_bounded():
    cache = KeyCache(ttl_s=60)
    for i in range(MAX_ENTRIES + 5):
        cache.put(f"h{i}", i)
    assert len(cache._entries) <= MAX_ENTRIES + 1


def test_a_stored_ticket_records_the_version_that_classified_it(client):
    from ticket_triage.service.schemas import TicketCreate
    from ticket_triage.service.writer import NewTicket

    state = client.app.state.triage
    prediction = state.classifier.predict(["card fee"], batch_size=1)[0]
    data = TicketCreate(body="card fee").model_dump(mode="json")
    ticket, created = client.portal.call(state.writer.store, NewTicket(data, prediction, None, None, "v-old"))
    assert created and ticket.model_version == "v-old"
    assert client.get(f"/v1/tickets/{ticket.id}").json()["model_version"] == "v-old"


def test_a_conflicting_idempotency_key_is_a_domain_error_not_an_http_one(client):
    from ticket_triage.service.writer import IdempotencyConflict

    state = client.app.state.triage
    r = client.post("/v1/tickets", json={"body": "card fee"}, headers={"Idempotency-Key": "k1"})
    assert r.status_code == 201
    with pytest.raises(IdempotencyConflict, match="different ticket"):
        state.writer.replay("k1", {"body": "something else"})
