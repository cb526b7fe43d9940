"""The triage console: server-rendered pages; every change (confirm, correct, work state, bulk)
goes through the /v1 API from static/console.js (no inline script, no CDN).

Pages: `/` the work list (a queue, or a search over every queue), `/tickets/{id}` one ticket
with its history. Without a valid sign-in a page shows the sign-in form; with a stale one (an
expired or revoked credential in the cookie) it goes back to it with "Your session expired"
(issue 18, defect 5).

Sign-in (sessions.py, users.py): a person's name and password, or an `agent` API key ("sign
in with a key"), starts a signed, expiring session in an HttpOnly, SameSite=Strict cookie
(scripts cannot read it, other sites cannot send it), which the API accepts as well; behind a
reverse proxy that names the user (settings.trusted_user_header) no form is needed. With
--no-auth the console is open. "Sign out" ends the session.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from .. import crud
from ..deps import CONSOLE_COOKIE, Principal, SessionDep, StateDep, authenticate, request_principal
from ..models import TicketStatus, WorkState, utcnow
from ..schemas import Channel, Str
from ..security import hash_key
from ..sessions import TRUSTED_USER_SCOPE, SessionExpired, end_session, login_user, start_session
from ..state import ServiceState
from ._limits import GuardedRoute, Offset, TicketId
from .console_view import PAGE_SIZE, SORTS, FilterError, Filters, Pager, make_row

router = APIRouter(include_in_schema=False, route_class=GuardedRoute)
EXPIRED = "Your session expired, please sign in again."


CONSOLE_ROLES = ("agent", "admin")


def _console_principal(request: Request, state: ServiceState) -> Principal | None:
    """Who is signed in to the console; None for nobody and for a stale cookie (expired or
    forged session, disabled user, revoked key)."""
    if not state.settings.auth:
        return Principal("anonymous", "*")
    try:
        principal = request_principal(request, state)
    except SessionExpired:
        return None
    if principal is None or principal.revoked_at is not None or principal.role not in CONSOLE_ROLES:
        return None
    return principal


def _signed_out(request: Request, state: ServiceState) -> Response:
    """The sign-in form; a cookie that no longer signs in is dropped and the agent told why
    (a redirect first, so the address says it and a reload does not sign in again)."""
    params = request.query_params
    stale = bool(request.cookies.get(CONSOLE_COOKIE))
    if stale and not params.get("expired"):
        response: Response = RedirectResponse("/?expired=1", status_code=status.HTTP_303_SEE_OTHER)
    else:
        error = DENIED.get(params.get("denied") or "", "Sign-in refused.") if params.get("denied") else None
        notice = EXPIRED if params.get("expired") else None
        code = status.HTTP_401_UNAUTHORIZED if error or notice else status.HTTP_200_OK
        context = {"error": error, "notice": notice, "auth": True}
        response = request.app.state.templates.TemplateResponse(request, "login.html", context, status_code=code)
    if stale:
        response.delete_cookie(CONSOLE_COOKIE, path="/")
    return response


def _page(request: Request, template: str, context: dict, code: int = 200) -> HTMLResponse:
    state: ServiceState = request.app.state.triage
    base = {
        "model_version": state.model_version,
        "auth": state.settings.auth,
        "labels": state.labels,
        "proxied": bool(request.scope.get(TRUSTED_USER_SCOPE)),  # the proxy signs in and out, not us
    }
    return request.app.state.templates.TemplateResponse(request, template, {**base, **context}, status_code=code)


def _not_found(request: Request, principal: Principal, message: str) -> HTMLResponse:
    return _page(request, "not_found.html", {"principal": principal, "message": message}, status.HTTP_404_NOT_FOUND)


def _landing_queue(queues: list[dict], review_queue: str) -> str | None:
    """The review queue when it has open work, else the first queue that has some."""
    open_work = {q["queue"]: q["count"] for q in queues}
    if open_work.get(review_queue):
        return review_queue
    return next((q for q, n in open_work.items() if n), review_queue if review_queue in open_work else None)


@router.get("/", response_class=HTMLResponse)
def console(request: Request, session: SessionDep, state: StateDep, offset: Offset = 0) -> Response:
    # offset is declared (the others are read by Filters) so one past the database's range is a 422
    principal = _console_principal(request, state)
    if principal is None:
        return _signed_out(request, state)
    queues = crud.queue_summary(session, queues=state.rules.queues)
    try:
        filters = Filters.from_query(request.query_params, state.labels)
    except FilterError as exc:
        filters, error = Filters(), str(exc)
    else:
        error = None
    if filters.queue is not None and not crud.queue_exists(session, queue=filters.queue, rules=state.rules):
        return _not_found(
            request,
            principal,
            f"There is no queue named “{filters.queue}”. The queues are: {', '.join(q['queue'] for q in queues)}.",
        )
    if filters.queue is None and not filters.searching:
        filters.queue = _landing_queue(queues, state.rules.review_queue)
    tickets, total = crud.list_tickets(session, **filters.crud_kwargs(), limit=PAGE_SIZE, offset=offset)
    return _page(
        request,
        "console.html",
        {
            "principal": principal,
            "queues": queues,
            "filters": filters,
            "error": error,
            "rows": [make_row(t, state.rules) for t in tickets],
            "pager": Pager(offset=offset, shown=len(tickets), total=total, sort=filters.sort),
            "sorts": SORTS,
            "latest_id": max((q["latest_id"] or 0 for q in queues), default=0),
            "channels": [c.value for c in Channel],
            "statuses": TicketStatus.ALL,
            "work_states": WorkState.ALL,
        },
        status.HTTP_400_BAD_REQUEST if error else status.HTTP_200_OK,
    )


@router.get("/tickets/{ticket_id}", response_class=HTMLResponse)
def ticket_page(ticket_id: TicketId, request: Request, session: SessionDep, state: StateDep) -> Response:
    principal = _console_principal(request, state)
    if principal is None:
        return _signed_out(request, state)
    ticket = crud.get_ticket(session, ticket_id=ticket_id)
    if ticket is None:
        return _not_found(request, principal, f"There is no ticket {ticket_id}.")
    notifications, _ = crud.list_notifications(session, ticket_id=ticket_id, limit=100)
    context = {
        "principal": principal,
        "row": make_row(ticket, state.rules),
        "events": crud.ticket_history(session, ticket=ticket),
        "notifications": notifications,
    }
    return _page(request, "ticket_detail.html", context)


TEAM_PERIODS = {"1": "today", "7": "the last 7 days", "30": "the last 30 days", "all": "all time"}


@router.get("/team", response_class=HTMLResponse)
def team(request: Request, session: SessionDep, state: StateDep) -> Response:
    """The team view: per-agent corrections, confirmations and tickets done, and each queue's
    open and total work (what a lead checks at the start of a shift)."""
    principal = _console_principal(request, state)
    if principal is None:
        return _signed_out(request, state)
    period = request.query_params.get("days") or "7"
    period = period if period in TEAM_PERIODS else "7"
    since = None if period == "all" else utcnow() - timedelta(days=int(period))
    if period == "1":
        since = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    agents = sorted(crud.agent_counts(session, since=since).items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    context = {
        "principal": principal,
        "agents": agents,
        "queues": crud.queue_summary(session, queues=state.rules.queues),
        "period": period,
        "periods": TEAM_PERIODS,
    }
    return _page(request, "team.html", context)


# ?denied=1 is the key form's (as before: links and tests use it), ?denied=password the name form's.
DENIED = {
    "1": "That key is not a valid agent key.",
    "password": "That name and password do not match an active account.",
}


@router.post("/console/login")
def login(
    request: Request,
    state: StateDep,
    key: Annotated[Str | None, Form(max_length=200)] = None,
    username: Annotated[Str | None, Form(max_length=200)] = None,
    password: Annotated[Str | None, Form(max_length=1000)] = None,
):
    if key and key.strip():
        principal, how, key_hash = authenticate(state, key.strip()), "1", hash_key(key.strip())
    else:
        principal, how, key_hash = login_user(state, (username or "").strip(), password or ""), "password", None
    if principal is None or principal.role not in CONSOLE_ROLES:
        return RedirectResponse(f"/?denied={how}", status_code=status.HTTP_303_SEE_OTHER)
    response = RedirectResponse("/", status_code=status.HTTP_303_SEE_OTHER)
    start_session(response, request, state, name=principal.name, role=principal.role, key_hash=key_hash)
    return response


@router.post("/console/logout")
def logout():
    response = RedirectResponse("/", status_code=status.HTTP_303_SEE_OTHER)
    end_session(response)
    return response
