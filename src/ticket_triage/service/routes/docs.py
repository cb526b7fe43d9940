"""/openapi.json, /docs and /redoc, behind an agent key unless TRIAGE_PUBLIC_DOCS is set (the
document maps every endpoint and parameter; with auth off they are open like everything).

Swagger UI and ReDoc are served from static/vendor/ (copied from the npm packages
swagger-ui-dist and redoc, with their licences): the pages work offline and load nothing
from a CDN or Google Fonts; static/docs.js starts them, so no inline script is needed."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
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


def _docs_page(request: Request, viewer: str) -> HTMLResponse:
    """docs.html with `viewer` (swagger-ui or redoc): the vendored assets, no CDN."""
    context = {"title": f"{request.app.title} - API docs", "openapi_url": "/openapi.json", "viewer": viewer}
    return request.app.state.templates.TemplateResponse(request, "docs.html", context)


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    return _docs_page(request, "swagger-ui")


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    return _docs_page(request, "redoc")
