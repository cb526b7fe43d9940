"""Shadow mode: a candidate model also classifies live tickets, off the request path.

After a ticket is stored, `ShadowRunner.offer` puts it on a bounded queue and returns at once
(no await, no exception): intake never waits for the shadow nor fails because of it. A worker
task takes what has queued (a batch at a time), classifies it with the shadow model in a thread
of its own and writes `shadow_predictions` rows. The rows are never read for routing; they feed
the agreement counters of /metrics and `GET /v1/admin/shadow`. When the queue is full (the shadow
is slower than intake) tickets are skipped and counted, not queued without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from .live_model import LiveModel
from .metrics import ServiceMetrics
from .models import ShadowPrediction, Ticket, TicketStatus
from .tasks import cancel_and_wait

log = logging.getLogger("ticket_triage.service")

# An agent set or confirmed these tickets' category: their `category` is the truth to score against.
REVIEWED = (TicketStatus.CORRECTED, TicketStatus.CONFIRMED)


@dataclass(frozen=True)
class ShadowItem:
    ticket_id: int
    text: str
    active_version: str | None
    active_category: str | None


class ShadowRunner:
    def __init__(
        self,
        *,
        live: LiveModel,
        sessions: sessionmaker[Session],
        metrics: ServiceMetrics,
        batch_size: int = 32,
        max_pending: int = 1000,
        refresh_s: float = 30.0,
    ):
        self.live = live
        self.sessions = sessions
        self.metrics = metrics
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.refresh_s = refresh_s  # how often the accuracy gauges are recomputed from the table
        self._queue: asyncio.Queue[ShadowItem] | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._refreshed = 0.0

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_pending)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="triage-shadow")
        self._task = asyncio.create_task(self._run(), name="triage-shadow")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def offer(self, ticket_id: int, text: str, active_version: str | None, active_category: str | None) -> None:
        """Queue a stored ticket for the shadow model (a no-op without one); never raises."""
        if self.live.shadow is None or self._queue is None:
            return
        try:
            self._queue.put_nowait(ShadowItem(ticket_id, text, active_version, active_category))
        except asyncio.QueueFull:
            self.metrics.shadow_skipped.inc()

    async def drain(self) -> None:
        """Wait until everything offered so far is processed (tests, shutdown)."""
        if self._queue is not None:
            await self._queue.join()

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await loop.run_in_executor(self._executor, self.process, batch)
            except Exception as exc:  # the shadow is optional: log, count, carry on
                self.metrics.shadow_failures.inc()
                log.warning("shadow batch of %d failed: %s: %s", len(batch), type(exc).__name__, exc)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def process(self, batch: list[ShadowItem]) -> int:
        """Classify `batch` with the shadow model and store the rows; how many were stored."""
        result = self.live.predict_shadow([item.text for item in batch], self.batch_size)
        if result is None:
            return 0  # the shadow was switched off meanwhile
        version, preds = result
        with self.sessions() as session, session.begin():
            for item, pred in zip(batch, preds):
                session.add(
                    ShadowPrediction(
                        ticket_id=item.ticket_id,
                        model_version=version,
                        category=pred.category,
                        confidence=float(pred.confidence),
                        probabilities={str(k): float(v) for k, v in pred.probabilities.items()},
                        active_version=item.active_version,
                        active_category=item.active_category,
                    )
                )
        for item, pred in zip(batch, preds):
            agree = pred.category == item.active_category
            self.metrics.shadow_predictions.labels("agree" if agree else "disagree").inc()
        if time.monotonic() - self._refreshed > self.refresh_s:
            self.refresh_gauges(version)
        return len(preds)

    def refresh_gauges(self, version: str | None = None) -> dict:
        """Recompute the shadow's summary from the table and set the /metrics gauges from it."""
        version = version or (self.live.shadow.version if self.live.shadow else None)
        if version is None:
            return shadow_summary(self.sessions, None)
        summary = shadow_summary(self.sessions, version)
        self.metrics.observe_shadow_summary(summary)
        self._refreshed = time.monotonic()
        return summary


def shadow_summary(sessions: sessionmaker[Session], version: str | None) -> dict:
    """{version, n, agreement, corrected_n, shadow_accuracy, active_accuracy} for `version`'s rows.

    agreement: share of tickets where the shadow predicted what the active model predicted.
    corrected_n: those tickets whose category an agent later set (or confirmed); on them,
    shadow_accuracy and active_accuracy are the shares each model got right. None when n is 0."""
    out = {"version": version, "n": 0, "agreement": None, "corrected_n": 0, "shadow_accuracy": None}
    out["active_accuracy"] = None
    if version is None:
        return out
    sp = ShadowPrediction
    with sessions() as session:
        n, agree = session.execute(
            select(func.count(), func.sum(case((sp.category == sp.active_category, 1), else_=0))).where(
                sp.model_version == version
            )
        ).one()
        corrected_n, shadow_right, active_right = session.execute(
            select(
                func.count(),
                func.sum(case((sp.category == Ticket.category, 1), else_=0)),
                func.sum(case((sp.active_category == Ticket.category, 1), else_=0)),
            )
            .join(Ticket, Ticket.id == sp.ticket_id)
            .where(sp.model_version == version, Ticket.status.in_(REVIEWED))
        ).one()
    out.update(n=int(n or 0), corrected_n=int(corrected_n or 0))
    if out["n"]:
        out["agreement"] = int(agree or 0) / out["n"]
    if out["corrected_n"]:
        out["shadow_accuracy"] = int(shadow_right or 0) / out["corrected_n"]
        out["active_accuracy"] = int(active_right or 0) / out["corrected_n"]
    return out
