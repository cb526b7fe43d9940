"""Shared by the registry service tests (swap, shadow, admin): a registry of fake model folders
whose versions load as fake classifiers that tell their version apart, and an app serving it."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from _service_support import FakeClassifier, SimplePrediction

from ticket_triage.registry import ModelRegistry

# The confidence each version gives a text with a keyword: a ticket's confidence says which
# version classified it, whatever its stored model_version claims.
CONFIDENCE = {"v1": 0.9, "v2": 0.8, "v3": 0.7}


@dataclass
class VersionFake(FakeClassifier):
    """FakeClassifier with a per-version confidence, an optional delay per batch, and
    optionally one category for everything (a shadow that disagrees)."""

    confidence: float = 0.9
    delay_s: float = 0.0
    always: str | None = None

    def predict(self, texts: list[str], batch_size: int = 32) -> list[SimplePrediction]:
        preds = super().predict(texts, batch_size)
        if self.delay_s:
            time.sleep(self.delay_s)
        out = []
        for p in preds:
            category = self.always or p.category
            conf = self.confidence if p.confidence == 0.9 else p.confidence
            rest = (1 - conf) / (len(self.labels) - 1)
            out.append(
                SimplePrediction(category, conf, {lab: conf if lab == category else rest for lab in self.labels})
            )
        return out


def fake_model_folder(path: Path, macro_f1: float) -> Path:
    """Enough of a model folder for the registry (triage.json, metrics.json); the loader fakes the rest."""
    path.mkdir(parents=True)
    (path / "triage.json").write_text(json.dumps({"labels": []}))
    (path / "metrics.json").write_text(json.dumps({"test": {"macro_f1": macro_f1, "accuracy": macro_f1 + 0.05}}))
    return path


def make_registry(root: Path, n: int = 2, active: str | None = "v1") -> ModelRegistry:
    registry = ModelRegistry(root / "registry")
    for i in range(1, n + 1):
        registry.register(fake_model_folder(root / f"model{i}", 0.5 + i / 100), note=f"model {i}")
    if active:
        registry.promote(active)
    return registry


class Loader:
    """Loads registry versions as VersionFakes; remembers what it made (weakly, to check freeing)."""

    def __init__(self, delay_s: float = 0.0, **per_version):
        self.delay_s = delay_s
        self.per_version = per_version  # version -> dict of VersionFake fields, or an Exception to raise
        self.loads: list[str] = []
        self.made: dict = {}
        self.lock = threading.Lock()

    def __call__(self, entry):
        import weakref

        spec = self.per_version.get(entry.version, {})
        if isinstance(spec, Exception):
            raise spec
        model = VersionFake(
            model_version=f"fake-{entry.version}",
            confidence=CONFIDENCE.get(entry.version, 0.6),
            delay_s=self.delay_s,
            **spec,
        )
        with self.lock:
            self.loads.append(entry.version)
            self.made.setdefault(entry.version, []).append(weakref.ref(model))
        return model


def wait_for(condition, timeout_s: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
