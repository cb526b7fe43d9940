"""/v1/tickets/{id}/explanation: the words that drove a ticket's category (explain.py)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from ..deps import AgentDep, StateDep
from ..explanations import ExplanationPublic
from ._limits import AUTH, DATABASE, NOT_FOUND, GuardedRoute, TicketId, _reply

router = APIRouter(prefix="/v1", tags=["tickets"], route_class=GuardedRoute)

UNAVAILABLE = {
    503: _reply(
        "no model folder to explain with (the service was started without --model), too many explanations "
        "waiting, or the database is unavailable"
    )
}


@router.get(
    "/tickets/{ticket_id}/explanation",
    response_model=ExplanationPublic,
    responses={**NOT_FOUND, **AUTH, **DATABASE, **UNAVAILABLE},
)
async def explain_ticket(ticket_id: TicketId, state: StateDep, _: AgentDep) -> ExplanationPublic:
    """Word attributions (integrated gradients) for the model's category of the ticket: each word's
    characters in the ticket's text (subject, a blank line, body) and how much it pushed the
    category's logit. Computed on the first request (seconds on a CPU), then kept per ticket and
    model version (`cached`: true)."""
    payload = await state.explanations.explain(ticket_id)
    if payload is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no ticket {ticket_id}")
    return ExplanationPublic.model_validate(payload)
