"""Storing new tickets: one writer thread, one transaction per batch (group commit).

Under load, concurrent `POST /v1/tickets` requests used to insert and commit each in a thread of
its own; on SQLite they then queue for the one write lock, and every request pays a pool
checkout and a commit. Here each request hands its ticket to a `MicroBatcher` whose single
thread inserts whatever has queued meanwhile in one transaction. No request waits for others
to arrive (max wait 0): alone, a ticket is written at once. A request is answered only after
its transaction commits, so an acknowledged ticket is always stored.

A duplicate Idempotency-Key fails the whole batch's transaction; the batcher then stores each
of that batch's tickets alone, where the duplicate gets the first ticket back (or 409).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import HTTPException, status
from sqlalchemy.exc import IntegrityError

from . import crud
from .schemas import TicketPublic

if TYPE_CHECKING:
    from .state import ServiceState


@dataclass(frozen=True)
class NewTicket:
    data: dict  # the request body, as JSON-ready values
    prediction: object | None  # None: the model failed; stored `unclassified`
    error: str | None
    idempotency_key: str | None


def store_tickets(state: ServiceState, tickets: list[NewTicket]) -> list[tuple[TicketPublic, bool]]:
    """Insert and commit `tickets` in one transaction; (ticket, created) for each, in order.
    Raises StorageUnavailable (503, nothing acknowledged) if the database file is not the one
    the service opened, before the transaction or after its commit."""
    guard = state.storage
    if guard is not None:
        guard.check_file()
    if len(tickets) == 1:
        stored = [_store_one(state, tickets[0])]
    else:
        with state.sessions() as session, session.begin():
            rows = [_add(session, state, t) for t in tickets]
            session.flush()
            stored = [(TicketPublic.model_validate(row), True) for row in rows]
    if guard is not None:
        guard.check_file()  # deleted during the commit: it went to a file that is gone
    # Their outbox rows are committed: deliver now rather than at the deliverer's next poll.
    if any(created and state.rules.targets(t.queue, t.category) for t, created in stored):
        state.kick_notifications()
    return stored


def replay(state: ServiceState, key: str, data: dict) -> TicketPublic | None:
    """The ticket first stored with `key`, or None; 409 if it was made from another body."""
    with state.sessions() as session:
        ticket = crud.get_ticket_by_idempotency_key(session, key=key)
        if ticket is None:
            return None
        if ticket.request_hash != crud.request_hash(data):
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                "this Idempotency-Key was used for a different ticket; use a new key for a new ticket",
            )
        return TicketPublic.model_validate(ticket)


def _store_one(state: ServiceState, ticket: NewTicket) -> tuple[TicketPublic, bool]:
    """A concurrent or later retry with the same key gets the first ticket (created=False)."""
    try:
        with state.sessions() as session, session.begin():
            row = _add(session, state, ticket)
            session.flush()
            return TicketPublic.model_validate(row), True
    except IntegrityError:
        first = replay(state, ticket.idempotency_key, ticket.data) if ticket.idempotency_key else None
        if first is None:
            raise
        return first, False


def _add(session, state: ServiceState, ticket: NewTicket):
    return crud.create_ticket(
        session,
        data=ticket.data,
        prediction=ticket.prediction,
        error=ticket.error,
        rules=state.rules,
        model_version=state.model_version if ticket.prediction is not None else None,
        idempotency_key=ticket.idempotency_key,
    )
