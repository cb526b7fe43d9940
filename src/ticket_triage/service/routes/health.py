"""/healthz (the process answers), /readyz (model loaded, database reachable), /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from ..db import ping
from ..deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep):
    checks = {"model": "ok" if state.classifier is not None and state.labels else "not loaded", "database": "ok"}
    try:
        await run_in_threadpool(ping, state.engine)
    except Exception as exc:
        checks["database"] = f"unreachable ({type(exc).__name__})"
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks, "model_version": state.model_version if state.classifier else None}
    return JSONResponse(body, status_code=status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE)


@router.get("/metrics")
def metrics(state: StateDep) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
