"""Tickets stored `unclassified` (the model failed at intake) are classified later, here.

A background loop looks every `settings.retry_interval_s`; intake also kicks it as soon as a
model call succeeds again, so waiting tickets do not wait for the timer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from . import crud
from .batching import MicroBatcher
from .metrics import ServiceMetrics
from .models import TicketStatus
from .routing import RoutingRules
from .tasks import cancel_and_wait

log = logging.getLogger("ticket_triage.service")


class Reclassifier:
    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        model: MicroBatcher,
        rules: RoutingRules,
        metrics: ServiceMetrics,
        model_version: Callable[[], str],
        interval_s: float,
        batch_size: int,
        on_notifications: Callable[[], None] = lambda: None,
        on_classified: Callable[[int, str, str, str], None] = lambda *_: None,
    ):
        self.sessions = sessions
        self.model = model
        self.rules = rules
        self.metrics = metrics
        self.model_version = model_version
        self.interval_s = interval_s
        self.batch_size = batch_size
        self.on_notifications = on_notifications
        # (ticket id, text, version, category) of each ticket classified here, after the commit:
        # the shadow model sees these tickets too, as it sees those classified at intake.
        self.on_classified = on_classified
        # Wake-ups: a count of tickets stored unclassified, and the count the last empty look
        # had seen (so a ticket committed during that look is never forgotten).
        self._marked = 1  # != _seen: look at start, tickets may be left from a crash or an outage
        self._seen = 0
        self._task: asyncio.Task | None = None
        self._lock: asyncio.Lock | None = None

    async def start(self) -> None:
        self._lock = asyncio.Lock()
        self._task = asyncio.create_task(self._loop(), name="triage-reclassify")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            try:  # always look (a cheap indexed query): the flag only speeds things up
                await self.reclassify_pending()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the loop alive whatever happens (DB down, ...)
                log.warning("retrying unclassified tickets failed: %s", type(exc).__name__)
            await asyncio.sleep(self.interval_s)

    @property
    def pending(self) -> bool:
        return self._marked != self._seen

    def mark_unclassified(self) -> None:
        """Call after committing a ticket the model could not classify."""
        self._marked += 1

    def kick(self) -> None:
        """After a model call succeeds again, classify what waits without waiting for the timer."""
        if self.pending and self._lock is not None and not self._lock.locked():
            asyncio.get_running_loop().create_task(self.reclassify_pending())

    async def reclassify_pending(self) -> int:
        """Classify every `unclassified` ticket; returns how many were classified. Stops at the
        first batch with a failure (tried again next round; least-tried tickets come first)."""
        assert self._lock is not None, "Reclassifier.start() was not called"
        done = 0
        async with self._lock:
            while True:
                marked = self._marked
                batch = await run_in_threadpool(self._load_unclassified, self.batch_size)
                if not batch:
                    self._seen = marked
                    return done
                outcomes = await asyncio.gather(
                    *(self.model.submit([text]) for _, text in batch), return_exceptions=True
                )
                good = [(tid, out[0]) for (tid, _), out in zip(batch, outcomes) if not isinstance(out, BaseException)]
                bad = [(tid, out) for (tid, _), out in zip(batch, outcomes) if isinstance(out, BaseException)]
                if good:
                    texts = dict(batch)
                    stored = await run_in_threadpool(
                        self._store_predictions, [t for t, _ in good], [p for _, p in good]
                    )
                    for tid, made_by, category in stored:
                        self.on_classified(tid, texts[tid], made_by, category)
                    done += len(stored)
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

    def _store_predictions(self, ids: list[int], preds) -> list[tuple[int, str, str]]:
        """Store the predictions of tickets still unclassified; (id, version, category) of each stored."""
        stored = []
        version = self.model_version()
        with self.sessions() as session, session.begin():
            for tid, pred in zip(ids, preds):
                ticket = crud.get_ticket(session, ticket_id=tid)
                if ticket is None or ticket.status != TicketStatus.UNCLASSIFIED:
                    continue  # corrected by an agent meanwhile
                ticket.classify_attempts += 1
                previous_queue = ticket.queue
                made_by = getattr(pred, "model_version", None) or version  # the batch's version (live swaps)
                crud.apply_prediction(ticket, prediction=pred, rules=self.rules, model_version=made_by)
                crud.enqueue_notifications(
                    session, ticket=ticket, rules=self.rules, event="classified", previous_queue=previous_queue
                )
                self.metrics.predictions.labels(pred.category).inc()
                self.metrics.observe_routing(ticket.queue, ticket.status == TicketStatus.NEEDS_REVIEW)
                self.metrics.reclassified.inc()
                stored.append((tid, made_by, pred.category))
        if stored:
            log.info("classified %d ticket(s) that were waiting unclassified", len(stored))
            self.on_notifications()
        return stored
