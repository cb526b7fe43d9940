"""The app factory: `create_app(settings, classifier=None)` builds everything a running
service holds (engine, migrations, classifier, routing rules, batcher, metrics), so tests can
swap the database and the classifier. Nothing is created at import."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

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
from .deps import LoginRequired
from .live_model import LiveModel, LoadedModel, Loader
from .metrics import ServiceMetrics
from .middleware import BodyLimit, Metrics, RequestContext, request_id_of
from .openapi import install_openapi
from .routes import admin, classify, console, docs, explain, feedback, health, notifications, tickets
from .routes import stats as stats_routes
from .routes import work as work_routes
from .routing import load_routing
from .settings import Settings
from .state import ServiceState
from .storage import StorageGuard, StorageUnavailable
from .writer import IdempotencyConflict

log = logging.getLogger("ticket_triage.service")


def create_app(
    settings: Settings | None = None,
    classifier: ClassifierLike | None = None,
    explainer: object | None = None,
    model_loader: Loader | None = None,
) -> FastAPI:
    """A ready-to-serve FastAPI app. Raises ConfigError/ModelError before serving if anything is off.
    `explainer` (an explain.Explainer): what explains tickets; by default settings.model_dir's, loaded on first use.
    With settings.registry_dir, `model_loader(ModelVersion)` loads a registry version (default:
    load_classifier of its folder); an injected `classifier` then stands for the active version."""
    settings = settings or Settings()
    live = None
    if settings.registry_dir is not None:
        live = _registry_model(settings, classifier, model_loader)
        classifier = live.current.classifier
    if classifier is None:
        if settings.model_dir is None:
            raise ConfigError(
                "no model: give --model DIR (or TRIAGE_MODEL_DIR), the `model/` folder `triage train` wrote"
            )
        classifier = load_classifier(settings.model_dir, settings.backend, settings.device, settings.ensemble)
    labels = list(classifier.labels)
    if not labels:
        raise ModelError("the classifier has no labels")
    rules = load_routing(settings.routing_file, labels)

    engine = make_engine(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    if settings.migrate_on_start:
        upgrade_database(engine)
    metrics = ServiceMetrics()

    if live is None:
        live = LiveModel(LoadedModel(classifier, str(classifier.model_version), settings.model_dir))
    batcher = MicroBatcher(
        live.predict,  # reads the serving model once per batch: a live switch happens between batches
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        on_batch=metrics.observe_batch,
    )
    state = ServiceState(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        classifier=classifier,
        rules=rules,
        metrics=metrics,
        batcher=batcher,
        storage=StorageGuard(engine, min_free_mb=settings.min_free_disk_mb),
        explainer=explainer,
        live=live,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await state.start()
        # The backend (and, for auto, why) is logged: the fastest path depends on the CPU.
        backend = getattr(state.classifier, "backend_label", "an injected classifier")
        log.info(
            "serving model %s with %s, %d categories, routing %s",
            state.model_version,
            backend,
            len(labels),
            rules.source,
        )
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
        # Served by routes/docs.py, behind an agent key unless settings.public_docs.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.triage = state
    app.state.templates = Jinja2Templates(directory=str(resources.files("ticket_triage.service").joinpath("templates")))
    app.mount(
        "/static",
        StaticFiles(directory=str(resources.files("ticket_triage.service").joinpath("static"))),
        name="static",
    )
    # work first: its /tickets/bulk must win over /tickets/{ticket_id}
    for module in (work_routes, tickets, feedback, notifications, classify, health, console, docs, explain, admin):
        app.include_router(module.router)
    app.include_router(stats_routes.router)  # GET /v1/stats and the Monitoring page
    install_openapi(app, labels=labels, settings=settings)

    # Added innermost first: Metrics sees every status, RequestContext stamps every response.
    app.add_middleware(BodyLimit, max_request_bytes=settings.max_request_bytes)
    app.add_middleware(RequestContext)
    app.add_middleware(Metrics, metrics=metrics)
    if settings.forwarded_allow_ips:
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        # Outermost: the scheme (https for the console cookie's Secure) and the client address
        # come from X-Forwarded-* only when the peer is one of the trusted proxies.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)
    if settings.trusted_user_header:
        from .sessions import TrustedUserHeader

        # Outermost of all: it must see the proxy's own address, before X-Forwarded-For replaces it.
        app.add_middleware(
            TrustedUserHeader, header=settings.trusted_user_header, allow_ips=settings.forwarded_allow_ips
        )

    @app.exception_handler(TicketTriageError)
    async def triage_error(_: Request, exc: TicketTriageError):
        code = 503 if isinstance(exc, ModelError) else 400
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(LoginRequired)
    async def login_required(_: Request, exc: LoginRequired):
        # The console's script sends the agent to `login` (issue 18, defect 5).
        return JSONResponse({"detail": exc.detail, "login": exc.login}, status_code=401, headers=exc.headers)

    @app.exception_handler(IdempotencyConflict)
    async def idempotency_conflict(_: Request, exc: IdempotencyConflict):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(StorageUnavailable)
    async def storage_down(request: Request, exc: StorageUnavailable):
        log.error(
            "refused %s %s (request_id %s): %s", request.method, request.url.path, request_id_of(request.scope), exc
        )
        return JSONResponse(
            {"detail": f"{exc}. Nothing was stored; retry later with the same Idempotency-Key"},
            status_code=503,
            headers={"Retry-After": "30"},
        )

    @app.exception_handler(OperationalError)
    async def database_down(request: Request, exc: OperationalError):
        # Down, locked past the busy timeout, disk full: nothing was committed for this request.
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__
        log.warning(
            "database error on %s %s (request_id %s): %s",
            request.method,
            request.url.path,
            request_id_of(request.scope),
            reason,
        )
        return JSONResponse(
            {
                "detail": f"the database is unavailable ({reason}): nothing was stored; retry shortly (with the same Idempotency-Key, a retry cannot store a ticket twice)"
            },
            status_code=503,
            headers={"Retry-After": "5"},
        )

    return app


def _registry_model(settings: Settings, classifier: ClassifierLike | None, loader: Loader | None) -> LiveModel:
    """The live model of a registry: its active version loaded (or `classifier` standing for it)."""
    from ..registry import ModelRegistry

    registry = ModelRegistry(settings.registry_dir)
    if not registry.exists():
        raise ConfigError(
            f"no model registry at {settings.registry_dir}: `triage models register MODEL_DIR --registry {settings.registry_dir}` then `triage models promote v1`"
        )
    active = registry.active()
    if active is None:
        raise ConfigError(
            f"the registry {settings.registry_dir} has no active version: `triage models promote VERSION --registry {settings.registry_dir}`"
        )

    def default_loader(entry):
        return load_classifier(entry.path, settings.backend, settings.device, settings.ensemble)

    loader = loader or default_loader
    if classifier is None:
        classifier = loader(active)
    return LiveModel(
        LoadedModel(classifier, active.version, Path(active.path)),
        registry=registry,
        loader=loader,
        poll_s=settings.registry_poll_s,
        shadow_enabled=settings.shadow,
    )
