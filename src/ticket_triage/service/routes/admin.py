"""/v1/admin: the serving model version (switch, roll back) and the shadow model (admin role)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ...registry import ModelVersion
from ..deps import AdminDep, StateDep
from ..schemas import Message
from ..shadow import shadow_summary
from ..state import ServiceState
from ._limits import AUTH, BODY, DATABASE, GuardedRoute

router = APIRouter(prefix="/v1/admin", tags=["admin"], route_class=GuardedRoute)

VersionName = Field(min_length=1, max_length=50, pattern=r"^v[0-9]+$", examples=["v3"])
SWITCH = {
    400: {"model": Message, "description": "no registry, an unknown version, or one with other categories"},
    503: {
        "model": Message,
        "description": "the version does not load (the service keeps serving the old one), or the database is unavailable",
    },
}


class VersionPublic(BaseModel):
    version: str
    created_at: str
    source: str
    metrics: dict[str, Any]
    comparison: dict[str, Any] | None
    note: str = ""


class ModelStatus(BaseModel):
    serving: str = Field(description="the version classifying tickets in this process now")
    shadow_serving: str | None = Field(description="the shadow version running in this process, if any")
    registry: str | None = Field(description="the registry folder; null when serving one model folder")
    active: VersionPublic | None
    shadow: VersionPublic | None
    versions: list[VersionPublic]
    history: list[dict[str, Any]] = Field(description="promotions, rollbacks and shadow changes, oldest first")


class ModelChoice(BaseModel):
    version: str = VersionName


class ShadowChoice(BaseModel):
    version: str | None = Field(None, min_length=1, max_length=50, description="null stops shadow mode")


class ShadowSummary(BaseModel):
    version: str | None
    n: int = Field(description="live tickets the shadow version classified")
    agreement: float | None = Field(description="share of them where it predicted what the active model did")
    corrected_n: int = Field(description="those tickets whose category an agent set (or confirmed) since")
    shadow_accuracy: float | None = Field(description="share of corrected_n the shadow version got right")
    active_accuracy: float | None = Field(description="share of corrected_n the active model got right")


def _public(entry: ModelVersion | None) -> VersionPublic | None:
    if entry is None:
        return None
    return VersionPublic(
        version=entry.version,
        created_at=entry.created_at,
        source=entry.source,
        metrics=entry.metrics,
        comparison=entry.comparison,
        note=entry.note,
    )


def _status(state: ServiceState) -> ModelStatus:
    live = state.live
    shadow = live.shadow.version if live.shadow else None
    registry = live.registry
    if registry is None:
        return ModelStatus(
            serving=live.version,
            shadow_serving=shadow,
            registry=None,
            active=None,
            shadow=None,
            versions=[],
            history=[],
        )
    return ModelStatus(
        serving=live.version,
        shadow_serving=shadow,
        registry=str(registry.root),
        active=_public(registry.active()),
        shadow=_public(registry.shadow()),
        versions=[_public(v) for v in registry.versions()],
        history=registry.history(),
    )


@router.get("/model", response_model=ModelStatus, responses={**AUTH, **DATABASE})
async def model_status(state: StateDep, _: AdminDep) -> ModelStatus:
    """The serving version, the registry's active and shadow versions, every version and the history."""
    return await run_in_threadpool(_status, state)


@router.post("/model", response_model=ModelStatus, responses={**BODY, **AUTH, **DATABASE, **SWITCH})
async def promote_model(payload: ModelChoice, state: StateDep, principal: AdminDep) -> ModelStatus:
    """Make `version` the active one: loaded beside the serving model, switched between two
    batches, the old one freed. No request fails; each ticket records the version that classified it."""
    await state.live.promote(payload.version, by=f"api:{principal.name}")
    return await run_in_threadpool(_status, state)


@router.post("/model/rollback", response_model=ModelStatus, responses={**AUTH, **DATABASE, **SWITCH})
async def rollback_model(state: StateDep, principal: AdminDep) -> ModelStatus:
    """Make the previously active version active again (as live as a promote)."""
    await state.live.rollback(by=f"api:{principal.name}")
    return await run_in_threadpool(_status, state)


@router.get("/shadow", response_model=ShadowSummary, responses={**AUTH, **DATABASE})
async def shadow_status(state: StateDep, _: AdminDep) -> ShadowSummary:
    """How the shadow version compares with the active one on live tickets (also in /metrics)."""
    return ShadowSummary(**await run_in_threadpool(shadow_report, state))


@router.post("/shadow", response_model=ShadowSummary, responses={**BODY, **AUTH, **DATABASE, **SWITCH})
async def set_shadow(payload: ShadowChoice, state: StateDep, principal: AdminDep) -> ShadowSummary:
    """Let `version` classify live tickets beside the active one (never routing them); null stops it."""
    await state.live.set_shadow(payload.version, by=f"api:{principal.name}")
    return ShadowSummary(**await run_in_threadpool(shadow_report, state))


def shadow_report(state: ServiceState) -> dict:
    """ShadowSummary's fields for the shadow version serving now (or the registry's, when none runs)."""
    shadow = state.live.shadow
    if shadow is None:
        return shadow_summary(state.sessions, None)
    return state.shadow.refresh_gauges(shadow.version)
