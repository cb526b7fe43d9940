"""Prometheus metrics, in a registry of the app's own (so several apps in one process, as in
tests, never clash over the global registry)."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("triage_http_requests", "HTTP requests", ["method", "route", "status"], registry=r)
        self.latency = Histogram(
            "triage_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "triage_predictions", "predictions made, by predicted category", ["category"], registry=r
        )
        self.tickets = Counter(
            "triage_tickets_created", "tickets stored, by status at creation", ["status"], registry=r
        )
        self.routed = Counter("triage_tickets_routed", "tickets routed, by queue", ["queue"], registry=r)
        self.review_rate = Gauge(
            "triage_review_rate", "share of classified tickets sent to review (since start)", registry=r
        )
        self.failures = Counter(
            "triage_classification_failures", "model calls that failed (tickets kept unclassified)", registry=r
        )
        self.reclassified = Counter("triage_tickets_reclassified", "unclassified tickets classified later", registry=r)
        self.feedback = Counter("triage_feedback", "agent corrections", ["category"], registry=r)
        self.confirmations = Counter(
            "triage_confirmations",
            "agent confirmations of the model's category (not corrections)",
            ["category"],
            registry=r,
        )
        self.notifications = Counter(
            "triage_notifications",
            "notification delivery attempts, by kind (email, webhook) and outcome (sent, retried, failed, skipped)",
            ["kind", "outcome"],
            registry=r,
        )
        for kind in ("email", "webhook"):  # export zeros from the start, so rate() and alerts work at once
            for outcome in ("sent", "retried", "failed", "skipped"):
                self.notifications.labels(kind, outcome)
        self.batch_size = Histogram(
            "triage_batch_size", "texts per model call (micro-batching)", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_latency = Histogram(
            "triage_batch_duration_seconds", "seconds per model call", buckets=LATENCY_BUCKETS, registry=r
        )
        self._lock = threading.Lock()
        self._classified = 0
        self._reviewed = 0
        self._add_model_version_metrics()

    def _add_model_version_metrics(self) -> None:
        """Live swaps and shadow mode (live_model.py, shadow.py)."""
        r = self.registry
        self.model_info = Gauge("triage_model_info", "1 for the model version serving now", ["version"], registry=r)
        self.model_switches = Counter("triage_model_switches", "live switches of the serving model version", registry=r)
        self.shadow_predictions = Counter(
            "triage_shadow_predictions",
            "live tickets the shadow model classified, by whether it agreed with the active model",
            ["outcome"],
            registry=r,
        )
        for outcome in ("agree", "disagree"):
            self.shadow_predictions.labels(outcome)
        self.shadow_skipped = Counter(
            "triage_shadow_skipped", "tickets the shadow model skipped (its queue was full)", registry=r
        )
        self.shadow_failures = Counter("triage_shadow_failures", "shadow batches that failed", registry=r)
        self.shadow_agreement = Gauge(
            "triage_shadow_agreement", "share of shadow predictions equal to the active model's", registry=r
        )
        self.shadow_accuracy = Gauge(
            "triage_shadow_accuracy",
            "share of agent-corrected tickets the shadow model got right (-1: none yet)",
            ["model"],
            registry=r,
        )
        self.shadow_corrected = Gauge(
            "triage_shadow_corrected_tickets", "agent-corrected tickets the shadow model classified", registry=r
        )

    def observe_model(self, version: str, previous: str | None = None) -> None:
        if previous is not None and previous != version:
            self.model_info.labels(previous).set(0)
            self.model_switches.inc()
        self.model_info.labels(version).set(1)

    def observe_shadow_summary(self, summary: dict) -> None:
        """Gauges from `shadow.shadow_summary`: agreement, and accuracy of shadow and active models."""
        self.shadow_agreement.set(summary["agreement"] if summary["agreement"] is not None else -1)
        self.shadow_corrected.set(summary["corrected_n"])
        for model, key in (("shadow", "shadow_accuracy"), ("active", "active_accuracy")):
            self.shadow_accuracy.labels(model).set(summary[key] if summary[key] is not None else -1)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_latency.observe(seconds)

    def observe_routing(self, queue: str, needs_review: bool) -> None:
        self.routed.labels(queue).inc()
        with self._lock:
            self._classified += 1
            self._reviewed += int(needs_review)
            self.review_rate.set(self._reviewed / self._classified)

    def render(self) -> bytes:
        return generate_latest(self.registry)
