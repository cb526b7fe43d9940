"""/v1/tickets/{id}/feedback (agent corrections) and /v1/feedback/export (retraining data)."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from itertools import chain
from typing import Iterator

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import StreamingResponse

from .. import crud
from ..deps import AgentDep, SessionDep, StateDep
from ..schemas import FeedbackCreate, TicketPublic
from ..state import ServiceState
from ._limits import AUTH, BODY, DATABASE, NOT_FOUND, DateQuery, GuardedRoute, TicketId, unknown_category

router = APIRouter(prefix="/v1", tags=["feedback"], route_class=GuardedRoute)

# The CFPB complaint database's column names, so `triage data prepare` reads the export as it
# reads a CFPB file. Product holds the corrected category name (taxonomies map each category
# name onto itself).
EXPORT_COLUMNS = ["Date received", "Product", "Consumer complaint narrative", "Complaint ID", "Submitted via"]

# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV Injection").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: object) -> object:
    """OWASP's defence: a text cell a spreadsheet would read as a formula gets a leading '."""
    return "'" + cell if isinstance(cell, str) and cell.startswith(FORMULA_START) else cell


@router.post(
    "/tickets/{ticket_id}/feedback", response_model=TicketPublic, responses={**NOT_FOUND, **BODY, **AUTH, **DATABASE}
)
def give_feedback(
    ticket_id: TicketId, payload: FeedbackCreate, session: SessionDep, state: StateDep, principal: AgentDep
) -> TicketPublic:
    """Set a ticket's right category: it is re-routed to that category's queue, and the
    correction (who, when, from what) is kept for retraining."""
    if payload.category not in state.labels:
        raise unknown_category(payload.category, state.labels)
    ticket = crud.get_ticket(session, ticket_id=ticket_id)
    if ticket is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no ticket {ticket_id}")
    agent = principal.name if principal.role != "*" else (payload.agent or "anonymous")
    crud.add_feedback(
        session, ticket=ticket, category=payload.category, agent=agent, note=payload.note, rules=state.rules
    )
    session.commit()
    state.kick_notifications()
    state.metrics.feedback.labels(payload.category).inc()
    return TicketPublic.model_validate(ticket)


def _export_rows(state: ServiceState, since: datetime | None, escape_formulas: bool) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(EXPORT_COLUMNS)
    with state.sessions() as session:
        for ticket in crud.corrected_tickets(session, since=since):
            row = [ticket.created_at.date().isoformat(), ticket.category, ticket.text, ticket.id, ticket.channel]
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
