"""What one running app holds, and its lifecycle: settings, database, classifier, routing
rules, the model batcher, the ticket writer, the reclassify loop, the key cache, metrics and
(when configured) the notification deliverer. Each part lives in a module of its own; this
class only builds them, starts them in order and stops them in reverse."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from .batching import MicroBatcher
from .classifier import ClassifierLike
from .explanations import Explanations
from .keycache import KeyCache
from .live_model import LiveModel, LoadedModel
from .metrics import ServiceMetrics
from .reclassify import Reclassifier
from .routing import RoutingRules
from .sessions import SessionSigner, make_signer
from .settings import Settings
from .shadow import ShadowRunner
from .storage import StorageGuard
from .writer import TicketWriter


@dataclass
class ServiceState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    classifier: ClassifierLike
    rules: RoutingRules
    metrics: ServiceMetrics
    batcher: MicroBatcher  # the model: texts in, predictions out, concurrent requests share a call
    storage: StorageGuard | None = None  # is the database there and writable (storage.py)
    writer: TicketWriter = field(init=False)  # stores new tickets, a batch per transaction
    reclassifier: Reclassifier = field(init=False)  # classifies tickets stored `unclassified`
    keys: KeyCache = field(init=False)  # API-key lookups, cached for settings.api_key_cache_s
    signer: SessionSigner = field(init=False)  # signs console session cookies (sessions.py)
    deliverer: object | None = None  # notify.Deliverer while running (when settings.notify)
    drift: object | None = None  # drift.DriftChecker while running (the routing YAML's `drift:`)
    explainer: object | None = None  # an explain.Explainer injected by tests; else loaded from model_dir on first use
    explanations: Explanations = field(init=False)  # GET /v1/tickets/{id}/explanation, cached in the database
    # The serving model and its shadow, switchable live (live_model.py); built from `classifier`
    # when not given. The batcher's process function should be `live.predict`.
    live: LiveModel | None = None
    shadow: ShadowRunner = field(init=False)  # the shadow model's queue and worker (shadow.py)

    def __post_init__(self) -> None:
        self.writer = TicketWriter(
            sessions=self.sessions, rules=self.rules, storage=self.storage, on_notifications=self.kick_notifications
        )
        self.reclassifier = Reclassifier(
            sessions=self.sessions,
            model=self.batcher,
            rules=self.rules,
            metrics=self.metrics,
            model_version=lambda: self.model_version,
            interval_s=self.settings.retry_interval_s,
            batch_size=self.settings.max_batch_size,
            on_notifications=self.kick_notifications,
            on_classified=lambda tid, text, version, category: self.shadow.offer(tid, text, version, category),
        )
        self.keys = KeyCache(self.settings.api_key_cache_s)
        self.signer = make_signer(self.settings)
        if self.live is None:
            self.live = LiveModel(
                LoadedModel(self.classifier, str(self.classifier.model_version), self.settings.model_dir)
            )
        self.explanations = Explanations(
            sessions=self.sessions,
            model_dir=lambda: self.live.current.path if self.live is not None else self.settings.model_dir,
            served_version=lambda: self.model_version,
            explainer=self.explainer,
            n_steps=self.settings.explain_steps,
            max_pending=self.settings.explain_max_pending,
        )
        self.live.on_switch = self._on_switch
        self.metrics.observe_model(self.live.version)
        self.shadow = ShadowRunner(
            live=self.live,
            sessions=self.sessions,
            metrics=self.metrics,
            batch_size=self.settings.max_batch_size,
            max_pending=self.settings.shadow_max_pending,
        )

    def _on_switch(self, model: LoadedModel, previous: str) -> None:
        """The live model switched version: `classifier` and the model gauge follow it."""
        self.metrics.observe_model(model.version, previous)
        self.classifier = model.classifier

    @property
    def labels(self) -> list[str]:
        return list(self.classifier.labels)

    @property
    def model_version(self) -> str:
        """The version serving now; each prediction carries its own (VersionedPrediction)."""
        return self.live.version if self.live is not None else str(self.classifier.model_version)

    async def start(self) -> None:
        if self.storage is not None:
            self.storage.remember(self.engine)
        await self.live.start()
        await self.shadow.start()
        await self.batcher.start()
        await self.writer.start()
        await self.reclassifier.start()
        self.explanations.start()
        if self.settings.notify:
            from .notify import Deliverer

            self.deliverer = Deliverer(settings=self.settings, sessions=self.sessions, metrics=self.metrics)
            await self.deliverer.start()
        from .drift import DriftChecker

        self.drift = DriftChecker(
            sessions=self.sessions,
            rules=self.rules,
            model_version=lambda: self.model_version,
            interval_s=self.settings.drift_check_interval_s,
            reference=DriftChecker.reference_of(self.live.current.path),
            on_notifications=self.kick_notifications,
        )
        await self.drift.start()

    async def stop(self) -> None:
        if self.drift is not None:
            await self.drift.stop()
            self.drift = None
        self.explanations.stop()
        await self.reclassifier.stop()
        if self.deliverer is not None:
            await self.deliverer.stop()
            self.deliverer = None
        await self.batcher.stop()
        await self.writer.stop()
        await self.shadow.stop()
        await self.live.stop()

    def kick_notifications(self) -> None:
        """After committing notifications, deliver them now rather than at the next poll (any thread)."""
        if self.deliverer is not None:
            self.deliverer.kick()
