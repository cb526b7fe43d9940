"""The triage console at `/`: server-rendered queues and tickets; corrections go through the
feedback API from a small script (no external CDN).

Auth: with --no-auth the console is open. Otherwise an agent enters an `agent` API key once;
it is kept in an HttpOnly, SameSite=Strict cookie (scripts cannot read it, other sites cannot
send it), which the API accepts like an `Authorization` header. "Sign out" deletes it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse

from .. import crud
from ..deps import CONSOLE_COOKIE, Principal, SessionDep, StateDep, authenticate, presented_key
from ..schemas import Str
from ..state import ServiceState
from ._limits import GuardedRoute, Offset

router = APIRouter(include_in_schema=False, route_class=GuardedRoute)
PAGE_SIZE = 50


def _console_principal(request: Request, state: ServiceState) -> Principal | None:
    if not state.settings.auth:
        return Principal("anonymous", "*")
    principal = authenticate(state, presented_key(request))
    return principal if principal is not None and principal.role == "agent" else None


@router.get("/", response_class=HTMLResponse)
def console(
    request: Request,
    session: SessionDep,
    state: StateDep,
    queue: Annotated[Str | None, Query(max_length=100)] = None,
    offset: Offset = 0,
):
    templates = request.app.state.templates
    principal = _console_principal(request, state)
    if principal is None:
        error = "That key is not a valid agent key." if request.query_params.get("denied") else None
        return templates.TemplateResponse(
            request, "login.html", {"error": error}, status_code=status.HTTP_401_UNAUTHORIZED if error else 200
        )
    counts = crud.queue_counts(session)
    queues = [(q, sum(counts.get(q, {}).values())) for q in dict.fromkeys(state.rules.queues + sorted(counts))]
    if queue is None:
        queue = next((q for q, n in queues if n), queues[0][0] if queues else None)
    tickets, total = crud.list_tickets(session, queue=queue, limit=PAGE_SIZE, offset=offset) if queue else ([], 0)
    return templates.TemplateResponse(
        request,
        "console.html",
        {
            "queues": queues,
            "queue": queue,
            "tickets": tickets,
            "total": total,
            "offset": offset,
            "page_size": PAGE_SIZE,
            "labels": state.labels,
            "principal": principal,
            "auth": state.settings.auth,
            "model_version": state.model_version,
        },
    )


@router.post("/console/login")
def login(request: Request, state: StateDep, key: Annotated[Str, Form(max_length=200)]):
    principal = authenticate(state, key.strip())
    if principal is None or principal.role != "agent":
        return RedirectResponse("/?denied=1", status_code=status.HTTP_303_SEE_OTHER)
    response = RedirectResponse("/", status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        CONSOLE_COOKIE,
        key.strip(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=8 * 3600,
        path="/",
    )
    return response


@router.post("/console/logout")
def logout():
    response = RedirectResponse("/", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(CONSOLE_COOKIE, path="/")
    return response
