"""The app factory: `create_app(settings, classifier=None)` builds everything a running
service holds (engine, migrations, classifier, routing rules, batcher, metrics), so tests can
swap the database and the classifier. Nothing is created at import."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import OperationalError

from .. import __version__
from ..errors import ConfigError, ModelError, TicketTriageError
from .batching import MicroBatcher
from .classifier import ClassifierLike, load_classifier
from .db import make_engine, make_sessionmaker, upgrade_database
from .metrics import ServiceMetrics
from .openapi import install_openapi
from .routes import classify, console, feedback, health, notifications, tickets
from .routing import load_routing
from .settings import Settings
from .state import ServiceState

log = logging.getLogger("ticket_triage.service")


class LimitsAndMetrics:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware): refuse bodies over the limit
    by Content-Length (413), count requests and time them per route template."""

    def __init__(self, app, *, metrics: ServiceMetrics, max_request_bytes: int):
        self.app, self.metrics, self.max_request_bytes = app, metrics, max_request_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_request_bytes:
            body = {"detail": f"request body is {int(length)} bytes; the limit is {self.max_request_bytes}"}
            return await JSONResponse(body, status_code=413)(scope, receive, send)
        started = time.perf_counter()
        status_code = 500

        async def send_and_note(message):
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            path = getattr(scope.get("route"), "path", "<unmatched>")
            self.metrics.requests.labels(scope["method"], path, str(status_code)).inc()
            self.metrics.latency.labels(scope["method"], path).observe(time.perf_counter() - started)


def create_app(settings: Settings | None = None, classifier: ClassifierLike | None = None) -> FastAPI:
    """A ready-to-serve FastAPI app. Raises ConfigError/ModelError before serving if anything is off."""
    settings = settings or Settings()
    if classifier is None:
        if settings.model_dir is None:
            raise ConfigError("no model: give --model DIR (or TRIAGE_MODEL_DIR), the `model/` folder `triage train` wrote")
        classifier = load_classifier(settings.model_dir, settings.backend, settings.device, settings.ensemble)
    labels = list(classifier.labels)
    if not labels:
        raise ModelError("the classifier has no labels")
    rules = load_routing(settings.routing_file, labels)

    engine = make_engine(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    if settings.migrate_on_start:
        upgrade_database(engine)
    metrics = ServiceMetrics()

    def predict(texts: list[str], batch_size: int):
        return classifier.predict(texts, batch_size=batch_size)

    batcher = MicroBatcher(predict, max_batch_size=settings.max_batch_size, max_wait_ms=settings.max_wait_ms, on_batch=metrics.observe_batch)
    state = ServiceState(settings=settings, engine=engine, sessions=make_sessionmaker(engine), classifier=classifier, rules=rules, metrics=metrics, batcher=batcher)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await state.start()
        # The backend (and, for auto, why) is logged: the fastest path depends on the CPU.
        backend = getattr(classifier, "backend_label", "an injected classifier")
        log.info("serving model %s with %s, %d categories, routing %s", state.model_version, backend, len(labels), rules.source)
        try:
            yield
        finally:
            await state.stop()
            engine.dispose()

    app = FastAPI(
        title="ticket-triage",
        version=__version__,
        description="Classify support tickets, route them to the team's queue, and learn from agents' corrections.",
        lifespan=lifespan,
    )
    app.state.triage = state
    app.state.templates = Jinja2Templates(directory=str(resources.files("ticket_triage.service").joinpath("templates")))
    app.mount("/static", StaticFiles(directory=str(resources.files("ticket_triage.service").joinpath("static"))), name="static")
    for module in (tickets, feedback, notifications, classify, health, console):
        app.include_router(module.router)
    install_openapi(app, labels=labels, settings=settings)

    app.add_middleware(LimitsAndMetrics, metrics=metrics, max_request_bytes=settings.max_request_bytes)

    @app.exception_handler(TicketTriageError)
    async def triage_error(_: Request, exc: TicketTriageError):
        code = 503 if isinstance(exc, ModelError) else 400
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(OperationalError)
    async def database_down(request: Request, exc: OperationalError):
        # Down, locked past the busy timeout, disk full: nothing was committed for this request.
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__
        log.warning("database error on %s %s: %s", request.method, request.url.path, reason)
        return JSONResponse(
            {"detail": f"the database is unavailable ({reason}): nothing was stored; retry shortly (with the same Idempotency-Key, a retry cannot store a ticket twice)"},
            status_code=503, headers={"Retry-After": "5"},
        )

    return app
