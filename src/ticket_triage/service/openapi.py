"""The OpenAPI document of one app: what the module-level schemas cannot know is filled in at
`create_app` time from this app's model and settings (the categories as an enum, the most
texts one classify call takes), and `/metrics` gets its real content type."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST

from .settings import Settings


def _tailor(schema: dict[str, Any], labels: list[str], settings: Settings) -> None:
    models = schema["components"]["schemas"]
    # Only fields whose values are this model's labels: stored tickets may carry older ones.
    for model in ("FeedbackCreate", "PredictionPublic", "BulkCorrect"):
        models[model]["properties"]["category"]["enum"] = list(labels)
    models["ClassifyRequest"]["properties"]["texts"]["maxItems"] = settings.classify_max_texts
    metrics = schema["paths"].get("/metrics", {}).get("get")
    if metrics is not None:
        metrics["responses"]["200"]["content"] = {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}


def install_openapi(app: FastAPI, *, labels: list[str], settings: Settings) -> None:
    """Make `app.openapi()` (and /openapi.json) return the document tailored to `labels` and `settings`."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _tailor(generate(), labels, settings)  # `generate` caches it in app.openapi_schema
        return app.openapi_schema

    app.openapi = openapi
