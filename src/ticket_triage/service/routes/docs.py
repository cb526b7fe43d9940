"""/openapi.json, /docs and /redoc, behind an agent key unless TRIAGE_PUBLIC_DOCS is set (the
document maps every endpoint and parameter; with auth off they are open like everything)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from ..deps import StateDep, require_role

_agent = require_role("agent")


async def docs_access(request: Request, state: StateDep) -> None:
    if not state.settings.public_docs:
        await _agent(request, state)


router = APIRouter(include_in_schema=False, dependencies=[Depends(docs_access)])


@router.get("/openapi.json")
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title} - API docs")


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url="/openapi.json", title=f"{request.app.title} - API docs")
