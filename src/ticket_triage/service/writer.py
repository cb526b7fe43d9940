"""Storing new tickets: one writer thread, one transaction per batch (group commit).

Under load, concurrent `POST /v1/tickets` requests used to insert and commit each in a thread of
its own; on SQLite they then queue for the one write lock, and every request pays a pool
checkout and a commit. Here each request hands its ticket to a `MicroBatcher` whose single
thread inserts whatever has queued meanwhile in one transaction. No request waits for others
to arrive (max wait 0): alone, a ticket is written at once. A request is answered only after
its transaction commits, so an acknowledged ticket is always stored.

A duplicate Idempotency-Key fails the whole batch's transaction; the batcher then stores each
of that batch's tickets alone, where the duplicate gets the first ticket back (or
IdempotencyConflict, which the app answers with 409).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import TicketTriageError
from . import crud
from .batching import MicroBatcher
from .routing import RoutingRules
from .schemas import TicketPublic
from .storage import StorageGuard

WRITE_BATCH_SIZE = 64  # most new tickets per transaction


class IdempotencyConflict(TicketTriageError):
    """An Idempotency-Key already used for a different request body (HTTP 409)."""


@dataclass(frozen=True)
class NewTicket:
    data: dict  # the request body, as JSON-ready values
    prediction: object | None  # None: the model failed; stored `unclassified`
    error: str | None
    idempotency_key: str | None
    model_version: str | None = None  # the version that made `prediction`


class TicketWriter:
    """Stores new tickets through its own micro-batcher: `await writer.store(ticket)`."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        rules: RoutingRules,
        storage: StorageGuard | None = None,
        on_notifications: Callable[[], None] = lambda: None,
    ):
        self.sessions = sessions
        self.rules = rules
        self.storage = storage
        self.on_notifications = on_notifications  # outbox rows were committed: deliver now
        # Group commit is the writer's own business, whatever the model batching is set to:
        # a ticket alone is written at once; under load, one commit stores many.
        self._batcher = MicroBatcher(
            lambda tickets, _n: self.store_batch(tickets),
            max_batch_size=WRITE_BATCH_SIZE,
            max_wait_ms=0,
            name="store",
            skip_cancelled=False,  # a ticket is stored even if its client hung up meanwhile
        )

    async def start(self) -> None:
        await self._batcher.start()

    async def stop(self) -> None:
        await self._batcher.stop()

    async def store(self, ticket: NewTicket) -> tuple[TicketPublic, bool]:
        """(the stored ticket, created); created is False for a replayed Idempotency-Key."""
        (stored,) = await self._batcher.submit([ticket])
        return stored

    def store_batch(self, tickets: list[NewTicket]) -> list[tuple[TicketPublic, bool]]:
        """Insert and commit `tickets` in one transaction; (ticket, created) for each, in order.
        Raises StorageUnavailable (503, nothing acknowledged) if the database file is not the one
        the service opened, before the transaction or after its commit."""
        if self.storage is not None:
            self.storage.check_file()
        if len(tickets) == 1:
            stored = [self._store_one(tickets[0])]
        else:
            with self.sessions() as session, session.begin():
                rows = [self._add(session, t) for t in tickets]
                session.flush()
                stored = [(TicketPublic.model_validate(row), True) for row in rows]
        if self.storage is not None:
            self.storage.check_file()  # deleted during the commit: it went to a file that is gone
        if any(created and self.rules.targets(t.queue, t.category) for t, created in stored):
            self.on_notifications()
        return stored

    def replay(self, key: str, data: dict) -> TicketPublic | None:
        """The ticket first stored with `key`, or None; IdempotencyConflict if it was made from another body."""
        with self.sessions() as session:
            ticket = crud.get_ticket_by_idempotency_key(session, key=key)
            if ticket is None:
                return None
            if ticket.request_hash != crud.request_hash(data):
                raise IdempotencyConflict(
                    "this Idempotency-Key was used for a different ticket; use a new key for a new ticket"
                )
            return TicketPublic.model_validate(ticket)

    def _store_one(self, ticket: NewTicket) -> tuple[TicketPublic, bool]:
        """A concurrent or later retry with the same key gets the first ticket (created=False)."""
        try:
            with self.sessions() as session, session.begin():
                row = self._add(session, ticket)
                session.flush()
                return TicketPublic.model_validate(row), True
        except IntegrityError:
            first = self.replay(ticket.idempotency_key, ticket.data) if ticket.idempotency_key else None
            if first is None:
                raise
            return first, False

    def _add(self, session: Session, ticket: NewTicket):
        return crud.create_ticket(
            session,
            data=ticket.data,
            prediction=ticket.prediction,
            error=ticket.error,
            rules=self.rules,
            model_version=ticket.model_version if ticket.prediction is not None else None,
            idempotency_key=ticket.idempotency_key,
        )
