"""/v1/tickets/{id}/feedback (agent corrections) and /v1/feedback/export (retraining data)."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Iterator

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import StreamingResponse

from .. import crud
from ..deps import AgentDep, SessionDep, StateDep
from ..schemas import FeedbackCreate, Message, TicketPublic
from ..state import ServiceState
from ._limits import unknown_category

router = APIRouter(prefix="/v1", tags=["feedback"])

# The CFPB complaint database's column names, so `triage data prepare` reads the export as it
# reads a CFPB file. Product holds the corrected category name (taxonomies map each category
# name onto itself).
EXPORT_COLUMNS = ["Date received", "Product", "Consumer complaint narrative", "Complaint ID", "Submitted via"]


@router.post("/tickets/{ticket_id}/feedback", response_model=TicketPublic, responses={404: {"model": Message}})
def give_feedback(ticket_id: int, payload: FeedbackCreate, session: SessionDep, state: StateDep, principal: AgentDep) -> TicketPublic:
    """Set a ticket's right category: it is re-routed to that category's queue, and the
    correction (who, when, from what) is kept for retraining."""
    if payload.category not in state.labels:
        raise unknown_category(payload.category, state.labels)
    ticket = crud.get_ticket(session, ticket_id=ticket_id)
    if ticket is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no ticket {ticket_id}")
    agent = principal.name if principal.role != "*" else (payload.agent or "anonymous")
    crud.add_feedback(session, ticket=ticket, category=payload.category, agent=agent, note=payload.note, rules=state.rules)
    session.commit()
    state.kick_notifications()
    state.metrics.feedback.labels(payload.category).inc()
    return TicketPublic.model_validate(ticket)


def _export_rows(state: ServiceState, since: datetime | None) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(EXPORT_COLUMNS)
    with state.sessions() as session:
        for ticket in crud.corrected_tickets(session, since=since):
            writer.writerow([ticket.created_at.date().isoformat(), ticket.category, ticket.text, ticket.id, ticket.channel])
            if buf.tell() > 64 * 1024:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
    yield buf.getvalue()


@router.get("/feedback/export", response_class=StreamingResponse, responses={200: {"content": {"text/csv": {}}}})
def export_feedback(state: StateDep, _: AgentDep, since: datetime | None = Query(None, description="only tickets corrected since (ISO)")):
    """Corrected tickets as a CSV in the CFPB column format, for `triage data prepare`."""
    return StreamingResponse(
        _export_rows(state, since),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="triage-feedback.csv"'},
    )
