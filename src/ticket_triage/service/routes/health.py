"""/healthz (the process answers), /readyz (model loaded, database there and writable), /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from ..db import ping
from ..deps import StateDep, require_role
from ..storage import StorageUnavailable

router = APIRouter(tags=["health"])
_agent = require_role("agent")


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


def _storage_check(state) -> str:
    try:
        if state.storage is not None:
            state.storage.check_writable(state.engine)
        else:
            ping(state.engine)
    except StorageUnavailable as exc:
        return str(exc)
    except Exception as exc:  # down, locked past the busy timeout, read-only, disk full
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        return f"unreachable ({type(exc).__name__}: {reason})"
    return "ok"


@router.get("/readyz")
async def readyz(state: StateDep):
    """Ready when the model is loaded and the database can store a ticket durably now."""
    checks = {"model": "ok" if state.classifier is not None and state.labels else "not loaded"}
    checks["database"] = await run_in_threadpool(_storage_check, state)
    ready = all(v == "ok" for v in checks.values())
    body = {
        "status": "ready" if ready else "not ready",
        "checks": checks,
        "model_version": state.model_version if state.classifier else None,
    }
    headers = None if ready else {"Retry-After": "5"}
    return JSONResponse(
        body, status_code=status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE, headers=headers
    )


async def metrics_access(request: Request, state: StateDep) -> None:
    """An agent key, unless TRIAGE_PUBLIC_METRICS opens /metrics to scrapers without one."""
    if not state.settings.public_metrics:
        await _agent(request, state)


@router.get("/metrics", dependencies=[Depends(metrics_access)])
def metrics(state: StateDep) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
