"""What one running app holds: settings, database, classifier, routing rules, batcher, metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from . import crud
from .batching import MicroBatcher
from .classifier import ClassifierLike
from .intake import store_tickets
from .metrics import ServiceMetrics
from .models import TicketStatus
from .routing import RoutingRules
from .settings import Settings
from .storage import StorageGuard
from .tasks import cancel_and_wait

log = logging.getLogger("ticket_triage.service")

WRITE_BATCH_SIZE = 64  # most new tickets per transaction


@dataclass
class ServiceState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    classifier: ClassifierLike
    rules: RoutingRules
    metrics: ServiceMetrics
    batcher: MicroBatcher
    key_cache: dict[str, tuple[float, object]] = field(default_factory=dict)
    # Wake-ups for the retry: a count of tickets stored unclassified, and the count the last
    # empty look had seen (so a ticket committed during that look is never forgotten).
    _marked: int = 1  # != _seen: look at start, tickets may be left from a crash or an outage
    _seen: int = 0
    _retry_task: asyncio.Task | None = None
    _retry_lock: asyncio.Lock | None = None
    deliverer: object | None = None  # notify.Deliverer while running (when settings.notify)
    writer: MicroBatcher | None = None  # stores new tickets, a batch per transaction (intake.py)
    storage: StorageGuard | None = None  # is the database there and writable (storage.py)

    @property
    def labels(self) -> list[str]:
        return list(self.classifier.labels)

    @property
    def model_version(self) -> str:
        return str(self.classifier.model_version)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._retry_lock = asyncio.Lock()
        if self.storage is not None:
            self.storage.remember(self.engine)
        await self.batcher.start()
        # Group commit is the service's own business, on whatever the model batching is set to:
        # a ticket alone is written at once; under load, one commit stores many.
        self.writer = MicroBatcher(
            lambda tickets, _n: store_tickets(self, tickets),
            max_batch_size=WRITE_BATCH_SIZE,
            max_wait_ms=0,
            name="store",
            skip_cancelled=False,
        )
        await self.writer.start()
        self._retry_task = asyncio.create_task(self._retry_loop(), name="triage-reclassify")
        if self.settings.notify:
            from .notify import Deliverer

            self.deliverer = Deliverer(settings=self.settings, sessions=self.sessions, metrics=self.metrics)
            await self.deliverer.start()

    async def stop(self) -> None:
        await cancel_and_wait(self._retry_task)
        if self.deliverer is not None:
            await self.deliverer.stop()
            self.deliverer = None
        await self.batcher.stop()
        if self.writer is not None:
            await self.writer.stop()
            self.writer = None

    def kick_notifications(self) -> None:
        """After committing notifications, deliver them now rather than at the next poll (any thread)."""
        if self.deliverer is not None:
            self.deliverer.kick()

    # -- unclassified tickets ----------------------------------------------------------------
    async def _retry_loop(self) -> None:
        while True:
            try:  # always look (a cheap indexed query): the flag only speeds things up
                await self.reclassify_pending()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the loop alive whatever happens (DB down, ...)
                log.warning("retrying unclassified tickets failed: %s", type(exc).__name__)
            await asyncio.sleep(self.settings.retry_interval_s)

    @property
    def pending_unclassified(self) -> bool:
        return self._marked != self._seen

    def mark_unclassified(self) -> None:
        """Call after committing a ticket the model could not classify."""
        self._marked += 1

    def kick_retry(self) -> None:
        """After a model call succeeds again, classify what waits without waiting for the timer."""
        if self.pending_unclassified and self._retry_lock is not None and not self._retry_lock.locked():
            asyncio.get_running_loop().create_task(self.reclassify_pending())

    async def reclassify_pending(self) -> int:
        """Classify every `unclassified` ticket; returns how many were classified. Stops at the
        first batch with a failure (tried again next round; least-tried tickets come first)."""
        assert self._retry_lock is not None
        done = 0
        async with self._retry_lock:
            while True:
                marked = self._marked
                batch = await run_in_threadpool(self._load_unclassified, self.settings.max_batch_size)
                if not batch:
                    self._seen = marked
                    return done
                outcomes = await asyncio.gather(
                    *(self.batcher.predict([text]) for _, text in batch), return_exceptions=True
                )
                good = [(tid, out[0]) for (tid, _), out in zip(batch, outcomes) if not isinstance(out, BaseException)]
                bad = [(tid, out) for (tid, _), out in zip(batch, outcomes) if isinstance(out, BaseException)]
                if good:
                    done += await run_in_threadpool(self._store_predictions, [t for t, _ in good], [p for _, p in good])
                if bad:
                    self.metrics.failures.inc(len(bad))
                    await run_in_threadpool(self._note_failures, bad)
                    return done

    def _load_unclassified(self, limit: int) -> list[tuple[int, str]]:
        with self.sessions() as session:
            return [(t.id, t.text) for t in crud.unclassified_tickets(session, limit=limit)]

    def _note_failures(self, failures: list[tuple[int, BaseException]]) -> None:
        with self.sessions() as session, session.begin():
            for tid, exc in failures:
                ticket = crud.get_ticket(session, ticket_id=tid)
                if ticket is not None:
                    ticket.classify_attempts += 1
                    ticket.last_error = f"{type(exc).__name__}: {exc}"[:500]

    def _store_predictions(self, ids: list[int], preds) -> int:
        n = 0
        with self.sessions() as session, session.begin():
            for tid, pred in zip(ids, preds):
                ticket = crud.get_ticket(session, ticket_id=tid)
                if ticket is None or ticket.status != TicketStatus.UNCLASSIFIED:
                    continue  # corrected by an agent meanwhile
                ticket.classify_attempts += 1
                previous_queue = ticket.queue
                crud.apply_prediction(ticket, prediction=pred, rules=self.rules, model_version=self.model_version)
                crud.enqueue_notifications(
                    session, ticket=ticket, rules=self.rules, event="classified", previous_queue=previous_queue
                )
                self.metrics.predictions.labels(pred.category).inc()
                self.metrics.observe_routing(ticket.queue, ticket.status == TicketStatus.NEEDS_REVIEW)
                self.metrics.reclassified.inc()
                n += 1
        if n:
            log.info("classified %d ticket(s) that were waiting unclassified", n)
            self.kick_notifications()
        return n

    # -- API-key lookups (short cache: a key is checked on every request) ----------------------
    # A key revoked in the database (`triage apikey revoke`, any process) stops working on every
    # replica within settings.api_key_cache_s (default 10 s; 0 turns the cache off). Known
    # revoked keys are cached too, so they are refused without a query.
    def cached_key(self, key_hash: str):
        hit = self.key_cache.get(key_hash)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    def cache_key(self, key_hash: str, principal) -> None:
        ttl = self.settings.api_key_cache_s
        if ttl <= 0:
            return
        if len(self.key_cache) > 10_000:
            self.key_cache.clear()
        self.key_cache[key_hash] = (time.monotonic() + ttl, principal)
