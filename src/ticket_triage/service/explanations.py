"""Ticket explanations for the service: computed lazily, off the event loop, once per ticket,
model version and method, and kept in the `explanations` table.

The service's classifier may be ONNX or a fake injected by tests, so the explainer is its own
object: injected (`create_app(..., explainer=...)`), or loaded from settings.model_dir's PyTorch
weights on the first request. Without either, requests get 503 with what to do.

Computations run one at a time in a thread of their own, not in the thread pool that serves
every other request: an explanation takes seconds, and a burst of them must not stall ticket
intake. One at a time because one already uses every core PyTorch is given, and because Captum
hooks the shared embedding layer for the length of a call. A second request for an explanation
being computed waits for it and reads its row instead of computing it again (a lock per ticket,
version and method, and a look at the table before computing); the table's unique key settles
the race between two replicas.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from ..errors import ModelError
from .models import Explanation, Ticket

log = logging.getLogger("ticket_triage.service")
METHOD = "integrated_gradients"


class ExplainerUnavailable(ModelError):
    """No model to explain with (the app maps ModelError to 503)."""


class ExplanationsBusy(ModelError):
    """Too many explanations waiting: 503, retry later."""


# -- the reply (contract B) ---------------------------------------------------------------------
class TokenPublic(BaseModel):
    text: str
    start: int = Field(description="character offset into the ticket's text (subject, a blank line, body)")
    end: int
    attribution: float = Field(description="how much this word moved the target's logit (positive: towards it)")


class ExplanationPublic(BaseModel):
    model_version: str
    target: str = Field(description="the category explained: the model's category for the ticket")
    method: str
    tokens: list[TokenPublic]
    delta: float = Field(description="sum of attributions minus (logit - baseline logit): the integral's error")
    cached: bool
    logit: float | None = None
    baseline_logit: float | None = None
    n_steps: int | None = None
    baseline: str | None = None
    truncated: bool = Field(False, description="the text is longer than the model reads; only the words listed were")
    windows: int | None = None
    explains: str = Field("transformer", description="the part of the model explained")
    note: str = Field("", description="e.g. a TF-IDF ensemble's share, which is not attributed")
    probabilities: dict[str, float] | None = Field(None, description="the transformer's probabilities")


def payload_of(result) -> dict[str, Any]:
    """What is stored for an `explain.Explanation` (the reply without `cached`)."""
    data = result.to_dict()
    data.pop("target_index", None)
    return data


@dataclass
class _Wanted:
    ticket_id: int
    text: str
    target: str | None
    version: str


@dataclass
class Explanations:
    """The explanation service of one app (see the module docstring)."""

    sessions: sessionmaker[Session]
    model_dir: Callable[[], Path | None]  # the serving version's folder (it changes with a live switch)
    served_version: Callable[[], str]  # the served classifier's version: explanations are keyed by it
    explainer: Any = None  # an explain.Explainer (or alike: .explain(text, target, n_steps), .labels)
    n_steps: int = 20
    max_pending: int = 32
    computed: int = 0  # explanations computed (not read from the table) by this process
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    _mutex: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _load_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _locks: dict = field(default_factory=dict, init=False, repr=False)
    _pending: int = field(default=0, init=False, repr=False)
    _injected: bool = field(default=False, init=False, repr=False)
    _loaded_version: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._injected = self.explainer is not None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="explain")

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # -- the request --------------------------------------------------------------------------
    def version(self) -> str:
        """An injected explainer has its own version; one loaded from the served folder explains
        the served model, so it takes the served classifier's version (what tickets record)."""
        if self._injected:
            return str(getattr(self.explainer, "model_version", "") or self.served_version())
        return self.served_version()

    async def explain(self, ticket_id: int) -> dict[str, Any] | None:
        """The ticket's explanation (a dict of ExplanationPublic), or None for no such ticket."""
        self._check_available()
        version = self.version()
        found = await run_in_threadpool(self._lookup, ticket_id, version)
        if found is None or isinstance(found, dict):
            return found
        with self._mutex:
            if self._pool is None:
                raise ExplainerUnavailable("the service is not running (its lifespan has not started)")
            if self._pending >= self.max_pending:
                raise ExplanationsBusy(
                    f"{self._pending} explanations are being computed: retry in a minute (settings.explain_max_pending)"
                )
            self._pending += 1
        try:
            return await asyncio.wrap_future(self._pool.submit(self._compute, found))
        finally:
            with self._mutex:
                self._pending -= 1

    def _check_available(self) -> None:
        if self.explainer is None and self.model_dir() is None:
            raise ExplainerUnavailable(
                "explanations need the model folder's PyTorch weights, and this service was started with a classifier "
                "but no model folder: start it with --model DIR (TRIAGE_MODEL_DIR)"
            )

    def _lookup(self, ticket_id: int, version: str) -> dict[str, Any] | _Wanted | None:
        with self.sessions() as session:
            ticket = session.get(Ticket, ticket_id)
            if ticket is None:
                return None
            stored = self._stored(session, ticket_id, version)
            if stored is not None:
                return {**stored, "cached": True}
            return _Wanted(ticket_id, ticket.text, ticket.predicted_category, version)

    @staticmethod
    def _stored(session: Session, ticket_id: int, version: str) -> dict[str, Any] | None:
        row = session.scalars(
            select(Explanation.payload).where(
                Explanation.ticket_id == ticket_id, Explanation.model_version == version, Explanation.method == METHOD
            )
        ).first()
        return dict(row) if row is not None else None

    # -- computing (in the pool) --------------------------------------------------------------
    def _key_lock(self, key: tuple) -> threading.Lock:
        with self._mutex:
            return self._locks.setdefault(key, threading.Lock())

    def _compute(self, wanted: _Wanted) -> dict[str, Any]:
        key = (wanted.ticket_id, wanted.version, METHOD)
        lock = self._key_lock(key)
        with lock:
            try:
                with self.sessions() as session:  # another request may have finished it while we waited
                    stored = self._stored(session, wanted.ticket_id, wanted.version)
                if stored is not None:
                    return {**stored, "cached": True}
                explainer = self._explainer()
                target = wanted.target if wanted.target in explainer.labels else None
                result = explainer.explain(wanted.text, target=target, n_steps=self.n_steps)
                payload = {**payload_of(result), "model_version": wanted.version, "method": METHOD}
                with self._mutex:
                    self.computed += 1
                return {**self._store(wanted, payload), "cached": False}
            finally:
                with self._mutex:
                    # Whoever still waits on this lock finds the stored row when it gets it.
                    if self._locks.get(key) is lock:
                        del self._locks[key]

    def _store(self, wanted: _Wanted, payload: dict[str, Any]) -> dict[str, Any]:
        with self.sessions() as session:
            session.add(
                Explanation(ticket_id=wanted.ticket_id, model_version=wanted.version, method=METHOD, payload=payload)
            )
            try:
                session.commit()
            except IntegrityError:  # another replica stored it first, or the ticket was deleted meanwhile
                session.rollback()
                stored = self._stored(session, wanted.ticket_id, wanted.version)
                return stored if stored is not None else payload
        return payload

    def _explainer(self):
        # Loaded on first use, and again after a live switch: an explanation must come from the
        # weights of the version it is keyed by (an injected explainer stays as it is).
        version = self.served_version()
        if self.explainer is None or (not self._injected and self._loaded_version != version):
            with self._load_lock:
                if self.explainer is None or (not self._injected and self._loaded_version != version):
                    from ..explain import Explainer

                    folder = self.model_dir()
                    if folder is None:
                        raise ExplainerUnavailable(f"model {version} has no model folder to explain it with")
                    log.info("loading the explainer of model %s from %s", version, folder)
                    self.explainer = Explainer.load(folder, model_version=version)
                    self._loaded_version = version
        return self.explainer
