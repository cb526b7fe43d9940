"""The swappable model: which classifier serves now, which one shadows it, and switching them live.

`LiveModel.predict` is the model batcher's process function. It reads the current model ONCE per
batch, so a whole batch is classified by one version, and every prediction carries the version
that made it (`VersionedPrediction.model_version`): a swap between predicting and storing a
ticket cannot mislabel it.

A switch (`promote`, `rollback`, `sync` after a CLI promote) loads the new version in a worker
thread beside the old one (the event loop keeps serving), then replaces one reference: the batch
running at that moment finishes with the old model, the next batch takes the new one. The old one
is freed once no batch uses it any more. A version that fails to load changes nothing.

Without a registry (`--model DIR` alone) the live model is that classifier, fixed, and the
recorded version is the classifier's own `model_version`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, ModelError, TicketTriageError
from ..registry import ModelRegistry, ModelVersion
from .classifier import ClassifierLike
from .tasks import cancel_and_wait

log = logging.getLogger("ticket_triage.service")

Loader = Callable[[ModelVersion], ClassifierLike]


@dataclass(frozen=True)
class LoadedModel:
    classifier: ClassifierLike
    version: str  # what tickets record: the registry version ("v3"), or the classifier's model_version
    path: Path | None = None  # its model folder, when known (the explainer loads the PyTorch weights from it)

    @property
    def labels(self) -> list[str]:
        return list(self.classifier.labels)


class VersionedPrediction:
    """A classifier's prediction plus the version that made it; other attributes are the original's."""

    __slots__ = ("raw", "model_version")

    def __init__(self, raw: Any, model_version: str):
        self.raw = raw
        self.model_version = model_version

    @property
    def category(self) -> str:
        return self.raw.category

    @property
    def confidence(self) -> float:
        return self.raw.confidence

    @property
    def probabilities(self) -> dict[str, float]:
        return self.raw.probabilities

    def __getattr__(self, name: str) -> Any:  # to_dict, top, ...: whatever the classifier's result has
        if name in self.__slots__:  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.raw, name)


class LiveModel:
    def __init__(
        self,
        current: LoadedModel,
        *,
        registry: ModelRegistry | None = None,
        loader: Loader | None = None,
        poll_s: float = 2.0,
        shadow_enabled: bool = True,
        on_switch: Callable[[LoadedModel, str], None] = lambda _new, _previous: None,
    ):
        self._current = current
        self._shadow: LoadedModel | None = None
        self.registry = registry
        self.loader = loader
        self.poll_s = poll_s
        self.shadow_enabled = shadow_enabled  # False: the registry's shadow is not run here
        self.on_switch = on_switch  # the state keeps `classifier` pointing at the serving one
        self._busy = threading.Lock()  # held while a batch runs: the old model is freed after it
        self._lock: asyncio.Lock | None = None  # one switch at a time (admin call, poller)
        self._seen_mtime: float | None = None
        self._task: asyncio.Task | None = None
        self.switches = 0

    # -- what serves -------------------------------------------------------------------------
    @property
    def current(self) -> LoadedModel:
        return self._current

    @property
    def shadow(self) -> LoadedModel | None:
        return self._shadow

    @property
    def version(self) -> str:
        return self._current.version

    def predict(self, texts: list[str], batch_size: int) -> list[VersionedPrediction]:
        """The batcher's process function: one model for the whole batch, its version on each result."""
        with self._busy:
            model = self._current  # read once: a switch during this batch takes effect at the next one
            preds = model.classifier.predict(texts, batch_size=batch_size)
        return [VersionedPrediction(p, model.version) for p in preds]

    def predict_shadow(self, texts: list[str], batch_size: int) -> tuple[str, list] | None:
        """(shadow version, predictions) or None when no shadow is set."""
        model = self._shadow
        if model is None:
            return None
        return model.version, list(model.classifier.predict(texts, batch_size=batch_size))

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._lock = asyncio.Lock()
        if self.registry is not None:
            self._seen_mtime = self.registry.mtime()
            await self._sync_shadow()  # the active one was loaded by create_app
            self._task = asyncio.create_task(self._poll(), name="triage-registry-poll")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    # -- switching ---------------------------------------------------------------------------
    async def promote(self, version: str, *, by: str) -> ModelVersion:
        """Load `version` beside the current model, switch to it, then record it in the registry."""
        registry = self._need_registry()
        async with self._locked():
            entry = await asyncio.to_thread(registry.get, version)
            if entry.version != self.version:
                await self._switch(entry)
            await asyncio.to_thread(registry.promote, version, by=by)
            await self._sync_shadow()  # promoting the shadow ends its shadowing
            self._seen_mtime = registry.mtime()
        return entry

    async def rollback(self, *, by: str) -> ModelVersion:
        registry = self._need_registry()
        async with self._locked():
            target = await asyncio.to_thread(registry.previous)
            if target is None:
                await asyncio.to_thread(registry.rollback, by=by)  # raises the registry's explanation
            await self._switch(target)
            entry = await asyncio.to_thread(registry.rollback, by=by)
            self._seen_mtime = registry.mtime()
        return entry

    async def set_shadow(self, version: str | None, *, by: str) -> ModelVersion | None:
        registry = self._need_registry()
        if version is not None and not self.shadow_enabled:
            raise ConfigError("shadow mode is off in this service (TRIAGE_SHADOW=false)")
        async with self._locked():
            entry = await asyncio.to_thread(registry.get, version) if version is not None else None
            if entry is not None and entry.version == self.version:
                raise ConfigError(f"{version} is the active version; a shadow is a candidate beside it")
            await self._load_shadow(entry)
            await asyncio.to_thread(registry.set_shadow, version, by=by)
            self._seen_mtime = registry.mtime()
        return entry

    async def sync(self) -> bool:
        """Follow the registry's index (a CLI promote, another replica): True if anything changed."""
        registry = self._need_registry()
        async with self._locked():
            self._seen_mtime = registry.mtime()
            active = await asyncio.to_thread(registry.active)
            changed = False
            if active is not None and active.version != self.version:
                await self._switch(active)
                changed = True
            return await self._sync_shadow() or changed

    async def _poll(self) -> None:
        assert self.registry is not None
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                mtime = await asyncio.to_thread(self.registry.mtime)
                if mtime != self._seen_mtime:
                    await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken index or a version that does not load: keep serving
                log.error("following the model registry %s failed: %s", self.registry.root, exc)

    async def _sync_shadow(self) -> bool:
        assert self.registry is not None
        wanted = await asyncio.to_thread(self.registry.shadow) if self.shadow_enabled else None
        have = self._shadow.version if self._shadow is not None else None
        if (wanted.version if wanted else None) == have:
            return False
        await self._load_shadow(wanted)
        return True

    async def _switch(self, entry: ModelVersion) -> None:
        new = await asyncio.to_thread(self._load, entry)
        old = [self._current]  # in a list, so that freeing drops the last reference
        self._current = new  # one assignment: each batch sees the old model or the new one
        self.switches += 1
        self.on_switch(new, old[0].version)
        log.info("now serving model %s (was %s)", new.version, old[0].version)
        await asyncio.to_thread(self._free, old)

    async def _load_shadow(self, entry: ModelVersion | None) -> None:
        new = await asyncio.to_thread(self._load, entry) if entry is not None else None
        old = [self._shadow] if self._shadow is not None else []
        self._shadow = new
        log.info("shadow model: %s", new.version if new else "none")
        if old:
            await asyncio.to_thread(self._free, old)

    def _load(self, entry: ModelVersion) -> LoadedModel:
        if self.loader is None:
            raise ConfigError("this service cannot load registry versions (no loader)")
        try:
            classifier = self.loader(entry)
        except TicketTriageError:
            raise
        except Exception as exc:
            raise ModelError(f"model {entry.version} ({entry.path}) does not load: {exc}") from None
        if sorted(classifier.labels) != sorted(self._current.labels):
            raise ConfigError(
                f"model {entry.version} predicts other categories ({', '.join(classifier.labels)}) than the served "
                f"one ({', '.join(self._current.labels)}): the routing rules follow the categories, so restart "
                "the service with it instead of swapping live"
            )
        return LoadedModel(classifier, entry.version, Path(entry.path))

    def _free(self, old: list[LoadedModel]) -> None:
        """Drop the old model once no batch uses it (waits for the batch running now, if any)."""
        with self._busy:
            pass
        old.clear()
        gc.collect()
        try:
            import sys

            torch = sys.modules.get("torch")  # only if loaded already: never import torch for this
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # freeing is best effort
            pass

    def _need_registry(self) -> ModelRegistry:
        if self.registry is None:
            raise ConfigError(
                "this service serves one model folder; start it with --registry DIR (TRIAGE_REGISTRY_DIR) "
                "to switch versions live"
            )
        return self.registry

    def _locked(self) -> asyncio.Lock:
        if self._lock is None:
            raise RuntimeError("LiveModel.start() was not called")
        return self._lock
