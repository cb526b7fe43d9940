"""/v1/tickets: create (classify + route + store), read, list, queues."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Response, status

from .. import crud
from ..deps import AgentDep, IntakeDep, SessionDep, StateDep
from ..models import TicketStatus, WorkState
from ..schemas import (
    DB_INT_MAX,
    Channel,
    HistoryEvent,
    HistoryPublic,
    Message,
    QueuePublic,
    Str,
    TicketCreate,
    TicketPublic,
    TicketsPublic,
)
from ..writer import NewTicket
from ._limits import (
    AUTH,
    BODY,
    DATABASE,
    NOT_FOUND,
    DateQuery,
    GuardedRoute,
    Limit,
    Offset,
    QueryStr,
    TicketId,
    check_metadata_size,
    check_text_size,
)
from .notifications import _public as public_notification

router = APIRouter(prefix="/v1", tags=["tickets"], route_class=GuardedRoute)
log = logging.getLogger("ticket_triage.service")

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="same key + same body = the same ticket, however often sent",
    ),
]


@router.post(
    "/tickets",
    status_code=status.HTTP_201_CREATED,
    response_model=TicketPublic,
    responses={
        200: {"description": "a retry: the ticket first made with this Idempotency-Key"},
        409: {"model": Message},
        **BODY,
        **AUTH,
        **DATABASE,
    },
)
async def create_ticket(
    payload: TicketCreate, response: Response, state: StateDep, _: IntakeDep, idempotency_key: IdempotencyKey = None
) -> TicketPublic:
    """Classify a ticket, route it to its queue and store it (committed before the answer).

    If the model fails, the ticket is still stored, as `unclassified` in the review queue, and
    classified later. With `Idempotency-Key`, a retry returns the first ticket (200).
    """
    check_text_size(payload.subject + payload.body, state.settings.max_text_bytes, "the ticket's subject and body")
    data = payload.model_dump(mode="json")
    check_metadata_size(data["metadata"], state.settings.metadata_max_bytes)
    # A retry with a used Idempotency-Key is found when its insert fails (writer.py): no query
    # before classifying, since retries are rare and every ticket would pay for that look.
    text = f"{payload.subject}\n\n{payload.body}" if payload.subject else payload.body
    prediction, error = None, None
    try:
        prediction = (await state.batcher.submit([text]))[0]
    except Exception as exc:  # stored unclassified; the retry loop classifies it later
        error = f"{type(exc).__name__}: {exc}"[:500]
        state.metrics.failures.inc()
    # The version that made this prediction travels with it: a live switch meanwhile cannot mislabel.
    version = getattr(prediction, "model_version", state.model_version) if prediction is not None else None
    ticket, created = await state.writer.store(NewTicket(data, prediction, error, idempotency_key, version))
    if prediction is None:
        state.reclassifier.mark_unclassified()  # after the commit, so the retry finds the ticket
    if not created:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
        return ticket
    state.metrics.tickets.labels(ticket.status).inc()
    if prediction is not None:
        state.metrics.predictions.labels(prediction.category).inc()
        state.metrics.observe_routing(ticket.queue, ticket.status == TicketStatus.NEEDS_REVIEW)
        state.reclassifier.kick()
        state.shadow.offer(ticket.id, text, version, prediction.category)  # after storing; never routes
    return ticket


@router.get("/tickets/{ticket_id}", response_model=TicketPublic, responses={**NOT_FOUND, **AUTH, **DATABASE})
def read_ticket(ticket_id: TicketId, session: SessionDep, _: AgentDep) -> TicketPublic:
    ticket = crud.get_ticket(session, ticket_id=ticket_id)
    if ticket is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no ticket {ticket_id}")
    return TicketPublic.model_validate(ticket)


Confidence = Annotated[float | None, Query(ge=0, le=1, description="the model's confidence, 0 to 1 (inclusive)")]


@router.get("/tickets", response_model=TicketsPublic, responses={**NOT_FOUND, **AUTH, **DATABASE})
def list_tickets(
    session: SessionDep,
    state: StateDep,
    _: AgentDep,
    queue: QueryStr = None,
    category: QueryStr = None,
    status_: Literal[*TicketStatus.ALL] | None = Query(None, alias="status"),
    created_from: DateQuery = None,
    created_to: DateQuery = None,
    q: Annotated[
        Str | None,
        Query(max_length=500, description="free-text search: tickets whose subject or body holds every word"),
    ] = None,
    work_state: Literal[*WorkState.ALL] | None = Query(None, description="open, assigned or done"),
    channel: Channel | None = Query(None, description="where the tickets came from"),
    confidence_min: Confidence = None,
    confidence_max: Confidence = None,
    assignee: QueryStr = None,
    sort: Literal[*crud.TICKET_SORTS] = Query(
        "newest", description="newest (newest first) or oldest-open (open work oldest first, done tickets last)"
    ),
    limit: Limit = 50,
    offset: Offset = 0,
) -> TicketsPublic:
    """Tickets filtered by queue, category, status, work state, channel, the model's confidence
    (a range), creation date (from inclusive, to exclusive) and free text (`q`), newest first
    unless `sort` says otherwise, paginated. An unknown queue is 404 (not an empty list)."""
    if queue is not None and not crud.queue_exists(session, queue=queue, rules=state.rules):
        known = ", ".join(state.rules.queues)
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no queue {queue!r}: the queues are {known}")
    items, count = crud.list_tickets(
        session,
        queue=queue,
        category=category,
        status=status_,
        created_from=created_from,
        created_to=created_to,
        q=q,
        work_state=work_state,
        channel=channel.value if channel is not None else None,
        confidence_min=confidence_min,
        confidence_max=confidence_max,
        assignee=assignee,
        sort=sort,
        limit=limit,
        offset=offset,
    )
    return TicketsPublic(items=[TicketPublic.model_validate(t) for t in items], count=count, limit=limit, offset=offset)


@router.get("/tickets/{ticket_id}/history", response_model=HistoryPublic, responses={**NOT_FOUND, **AUTH, **DATABASE})
def ticket_history(ticket_id: TicketId, session: SessionDep, _: AgentDep) -> HistoryPublic:
    """What happened to a ticket, oldest first: the model's prediction, each correction and
    confirmation (who, when, note, model version), each work-state change, and its notifications."""
    ticket = crud.get_ticket(session, ticket_id=ticket_id)
    if ticket is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no ticket {ticket_id}")
    notes, _count = crud.list_notifications(session, ticket_id=ticket_id, limit=500)
    return HistoryPublic(
        events=[HistoryEvent.model_validate(e) for e in crud.ticket_history(session, ticket=ticket)],
        notifications=[public_notification(n) for n in notes],
    )


SinceId = Annotated[
    int | None,
    Query(ge=0, le=DB_INT_MAX, description="a ticket id seen before: each queue's `new` counts the tickets after it"),
]


@router.get("/queues", response_model=list[QueuePublic], responses={**AUTH, **DATABASE})
def list_queues(session: SessionDep, state: StateDep, _: AgentDep, since: SinceId = None) -> list[QueuePublic]:
    """Every queue of the routing rules (and any other holding tickets): `count` is its open
    work (tickets not done), `total` every ticket. With `since` (the newest id a page showed),
    `new` says how many tickets arrived in each queue after it."""
    summary = crud.queue_summary(session, queues=state.rules.queues, since_id=since)
    return [QueuePublic(**row) for row in summary]
