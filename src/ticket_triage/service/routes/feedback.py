"""/v1/tickets/{id}/feedback and /confirm (agents' corrections and confirmations) and /v1/feedback/export (retraining data)."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from itertools import chain
from typing import Annotated, Iterator

from fastapi import APIRouter, Header, HTTPException, Query, Response, status
from fastapi.responses import StreamingResponse

from .. import crud
from ..deps import AgentDep, Principal, SessionDep, StateDep
from ..models import FeedbackKind, Ticket
from ..schemas import ConfirmCreate, FeedbackCreate, Message, TicketPublic
from ..state import ServiceState
from ._limits import AUTH, BODY, DATABASE, NOT_FOUND, DateQuery, GuardedRoute, TicketId, unknown_category

router = APIRouter(prefix="/v1", tags=["feedback"], route_class=GuardedRoute)

# The CFPB complaint database's column names, so `triage data prepare` reads the export as it
# reads a CFPB file. Product holds the corrected category name (taxonomies map each category
# name onto itself).
# CFPB's column names (so `triage data prepare` reads the file as it reads the CFPB's own), plus
# when the agent corrected it: `triage retrain` holds out the newest corrections by that time.
EXPORT_COLUMNS = [
    "Date received",
    "Product",
    "Consumer complaint narrative",
    "Complaint ID",
    "Submitted via",
    "Corrected at",
]

# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV Injection").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: object) -> object:
    """OWASP's defence: a text cell a spreadsheet would read as a formula gets a leading '."""
    return "'" + cell if isinstance(cell, str) and cell.startswith(FORMULA_START) else cell


FeedbackKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="a key used before on this ticket: nothing new is recorded (a retried or double-clicked save)",
    ),
]


def agent_name(principal: Principal, given: str | None) -> str:
    """Who acts: the key's or the signed-in person's name; with auth off, what the body says."""
    return principal.name if principal.role != "*" else (given or "anonymous")


def record_feedback(
    session,
    state: ServiceState,
    ticket: Ticket,
    *,
    category: str,
    agent: str,
    note: str | None,
    key: str | None,
    response: Response | None = None,
) -> TicketPublic:
    """Record a correction or confirmation (crud.add_feedback) and commit; a no-op (same category
    again, a used Idempotency-Key) writes nothing and is marked `Idempotent-Replayed: true`."""
    feedback = crud.add_feedback(
        session, ticket=ticket, category=category, agent=agent, note=note, rules=state.rules, idempotency_key=key
    )
    if feedback is None:
        if response is not None:
            response.headers["Idempotent-Replayed"] = "true"
        return TicketPublic.model_validate(ticket)
    session.commit()
    state.kick_notifications()
    if feedback.kind == FeedbackKind.CORRECTION:  # triage_feedback counts corrections only
        state.metrics.feedback.labels(category).inc()
    else:
        state.metrics.confirmations.labels(category).inc()
    return TicketPublic.model_validate(ticket)


def _ticket_or_404(session, ticket_id: int) -> Ticket:
    ticket = crud.get_ticket(session, ticket_id=ticket_id)
    if ticket is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no ticket {ticket_id}")
    return ticket


@router.post(
    "/tickets/{ticket_id}/feedback", response_model=TicketPublic, responses={**NOT_FOUND, **BODY, **AUTH, **DATABASE}
)
def give_feedback(
    ticket_id: TicketId,
    payload: FeedbackCreate,
    response: Response,
    session: SessionDep,
    state: StateDep,
    principal: AgentDep,
    idempotency_key: FeedbackKey = None,
) -> TicketPublic:
    """Set a ticket's right category. Another category than it has is a correction: the ticket
    is re-routed to that category's queue and the correction (who, when, from what) is kept for
    retraining. The model's own category, not yet judged, is a confirmation (status
    `confirmed`, never counted as a correction). The category it already has once judged, or a
    repeated `Idempotency-Key`, records nothing: the ticket is returned unchanged (200)."""
    if payload.category not in state.labels:
        raise unknown_category(payload.category, state.labels)
    ticket = _ticket_or_404(session, ticket_id)
    agent = agent_name(principal, payload.agent)
    return record_feedback(
        session,
        state,
        ticket,
        category=payload.category,
        agent=agent,
        note=payload.note,
        key=idempotency_key,
        response=response,
    )


def not_classified(ticket_id: int) -> HTTPException:
    return HTTPException(
        status.HTTP_409_CONFLICT,
        f"ticket {ticket_id} has no category from the model yet (unclassified): nothing to confirm; "
        "set its category with POST /v1/tickets/{id}/feedback",
    )


@router.post(
    "/tickets/{ticket_id}/confirm",
    response_model=TicketPublic,
    responses={**NOT_FOUND, 409: {"model": Message}, **BODY, **AUTH, **DATABASE},
)
def confirm_ticket(
    ticket_id: TicketId,
    response: Response,
    session: SessionDep,
    state: StateDep,
    principal: AgentDep,
    payload: ConfirmCreate | None = None,
    idempotency_key: FeedbackKey = None,
) -> TicketPublic:
    """Accept the ticket's category as it is: status `confirmed`, a confirmation kept (who, when,
    note, model version). Confirming again, or a ticket an agent already judged, records nothing (200)."""
    payload = payload or ConfirmCreate()
    ticket = _ticket_or_404(session, ticket_id)
    if ticket.category is None:
        raise not_classified(ticket_id)
    return record_feedback(
        session,
        state,
        ticket,
        category=ticket.category,
        agent=agent_name(principal, payload.agent),
        note=payload.note,
        key=idempotency_key,
        response=response,
    )


def _export_rows(state: ServiceState, since: datetime | None, escape_formulas: bool) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(EXPORT_COLUMNS)
    with state.sessions() as session:
        for ticket in crud.corrected_tickets(session, since=since):
            corrected_at = max(f.created_at for f in ticket.feedback if f.kind == FeedbackKind.CORRECTION)
            row = [
                ticket.created_at.date().isoformat(),
                ticket.category,
                ticket.text,
                ticket.id,
                ticket.channel,
                corrected_at.isoformat(),
            ]
            writer.writerow([neutralise(cell) for cell in row] if escape_formulas else row)
            if buf.tell() > 64 * 1024:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
    yield buf.getvalue()


@router.get(
    "/feedback/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}, **AUTH, **DATABASE},
)
def export_feedback(
    state: StateDep,
    _: AgentDep,
    since: DateQuery = None,
    escape_formulas: bool = Query(
        True,
        description="prefix ' to text cells starting with = + - @ tab or CR, so spreadsheets show them as text; "
        "false gives the texts verbatim (for `triage data prepare`, never for a spreadsheet)",
    ),
) -> StreamingResponse:
    """Corrected tickets (corrected since `since`, if given) as a CSV in the CFPB column format, for `triage data prepare`."""
    chunks = _export_rows(state, since, escape_formulas)
    # The first batch is read before the 200 goes out, so a failing query still gets its
    # error reply (e.g. 503) rather than a cut-off body.
    first = next(chunks)
    return StreamingResponse(
        chain([first], chunks),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="triage-feedback.csv"'},
    )
