"""/v1/tickets/{id}/work (open, assigned, done) and /v1/tickets/bulk (one action on many tickets)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from .. import crud
from ..deps import AgentDep, SessionDep, StateDep
from ..models import WorkState
from ..schemas import BulkAction, BulkCorrect, BulkResponse, BulkResult, TicketPublic, WorkUpdate
from ._limits import AUTH, BODY, DATABASE, NOT_FOUND, GuardedRoute, TicketId, unknown_category
from .feedback import agent_name, record_feedback

router = APIRouter(prefix="/v1", tags=["work"], route_class=GuardedRoute)

# A bulk action's work state, and whether it assigns.
BULK_WORK = {"assign": WorkState.ASSIGNED, "done": WorkState.DONE, "reopen": WorkState.OPEN}


@router.post(
    "/tickets/{ticket_id}/work", response_model=TicketPublic, responses={**NOT_FOUND, **BODY, **AUTH, **DATABASE}
)
def set_work(
    ticket_id: TicketId, payload: WorkUpdate, session: SessionDep, state: StateDep, principal: AgentDep
) -> TicketPublic:
    """Set who works on a ticket: open (nobody; clears the assignee), assigned (to `assignee`,
    by default the caller) or done (no longer counted in its queue's open work). Setting the
    state it already has records nothing."""
    ticket = crud.get_ticket(session, ticket_id=ticket_id)
    if ticket is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no ticket {ticket_id}")
    who = agent_name(principal, None)
    assignee = payload.assignee or (who if payload.state == WorkState.ASSIGNED else None)
    if crud.set_work_state(
        session, ticket=ticket, state=payload.state, assignee=assignee, agent=who, note=payload.note
    ):
        session.commit()
    return TicketPublic.model_validate(ticket)


@router.api_route("/tickets/bulk", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
def bulk_other_methods() -> None:
    """Without this, GET /v1/tickets/bulk would reach GET /v1/tickets/{ticket_id} (a 422 on "bulk")."""
    raise HTTPException(status.HTTP_405_METHOD_NOT_ALLOWED, "use POST", headers={"Allow": "POST"})


@router.post("/tickets/bulk", response_model=BulkResponse, responses={**BODY, **AUTH, **DATABASE})
def bulk(payload: BulkAction, session: SessionDep, state: StateDep, principal: AgentDep) -> BulkResponse:
    """One action on many tickets (at most 500): confirm, correct (needs `category`), assign (to
    `assignee`, by default the caller), done, or reopen. Each ticket gets a result; one that
    cannot take the action (unknown, unclassified for confirm) is reported, not fatal. Repeats
    are as idempotent as the single-ticket endpoints."""
    if isinstance(payload, BulkCorrect) and payload.category not in state.labels:
        raise unknown_category(payload.category, state.labels)
    who = agent_name(principal, None)
    results: list[BulkResult] = []
    for ticket_id in dict.fromkeys(payload.ids):  # each id once, in the order given
        ticket = crud.get_ticket(session, ticket_id=ticket_id)
        if ticket is None:
            results.append(BulkResult(id=ticket_id, ok=False, detail=f"no ticket {ticket_id}"))
            continue
        if payload.action in BULK_WORK:
            work_state = BULK_WORK[payload.action]
            assignee = (getattr(payload, "assignee", None) or who) if work_state == WorkState.ASSIGNED else None
            crud.set_work_state(
                session, ticket=ticket, state=work_state, assignee=assignee, agent=who, note=payload.note
            )
            session.commit()
        else:
            category = payload.category if isinstance(payload, BulkCorrect) else ticket.category
            if category is None:
                results.append(
                    BulkResult(id=ticket_id, ok=False, detail=f"ticket {ticket_id} is unclassified: nothing to confirm")
                )
                continue
            record_feedback(session, state, ticket, category=category, agent=who, note=payload.note, key=None)
        results.append(BulkResult(id=ticket_id, ok=True))
    return BulkResponse(results=results)
