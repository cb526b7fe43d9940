"""Database operations, keyword-only, each on a Session the caller owns (and commits)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import ApiKey, Feedback, Ticket, TicketStatus, utcnow
from .routing import RoutingRules


def request_hash(payload: dict[str, Any]) -> str:
    """Fingerprint of a create request, to tell a retry from a different ticket under the same key."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def apply_prediction(ticket: Ticket, *, prediction, rules: RoutingRules, model_version: str) -> None:
    decision = rules.route(prediction.category, float(prediction.confidence))
    ticket.category = prediction.category
    ticket.predicted_category = prediction.category
    ticket.confidence = float(prediction.confidence)
    ticket.probabilities = {str(k): float(v) for k, v in prediction.probabilities.items()}
    ticket.queue = decision.queue
    ticket.status = TicketStatus.NEEDS_REVIEW if decision.needs_review else TicketStatus.ROUTED
    ticket.model_version = model_version
    ticket.last_error = None


def create_ticket(
    session: Session,
    *,
    data: dict[str, Any],
    prediction,
    error: str | None,
    rules: RoutingRules,
    model_version: str | None,
    idempotency_key: str | None,
) -> Ticket:
    """Add a ticket: routed by `prediction`, or `unclassified` (review queue) when the model failed."""
    ticket = Ticket(
        subject=data.get("subject") or "",
        body=data["body"],
        channel=str(data.get("channel") or "api"),
        customer_ref=data.get("customer_ref"),
        metadata_=data.get("metadata") or {},
        idempotency_key=idempotency_key,
        request_hash=request_hash(data) if idempotency_key else None,
        classify_attempts=1,
        feedback=[],  # new ticket: no corrections (and no query to find that out)
    )
    if prediction is not None:
        apply_prediction(ticket, prediction=prediction, rules=rules, model_version=model_version or "")
    else:
        ticket.status = TicketStatus.UNCLASSIFIED
        ticket.queue = rules.review_queue
        ticket.last_error = error
    session.add(ticket)
    session.flush()
    return ticket


def get_ticket(session: Session, *, ticket_id: int) -> Ticket | None:
    return session.get(Ticket, ticket_id)


def get_ticket_by_idempotency_key(session: Session, *, key: str) -> Ticket | None:
    return session.scalars(select(Ticket).where(Ticket.idempotency_key == key)).first()


def list_tickets(
    session: Session,
    *,
    queue: str | None = None,
    category: str | None = None,
    status: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Ticket], int]:
    conditions = []
    if queue is not None:
        conditions.append(Ticket.queue == queue)
    if category is not None:
        conditions.append(Ticket.category == category)
    if status is not None:
        conditions.append(Ticket.status == status)
    if created_from is not None:
        conditions.append(Ticket.created_at >= created_from)
    if created_to is not None:
        conditions.append(Ticket.created_at < created_to)
    count = session.scalar(select(func.count()).select_from(Ticket).where(*conditions)) or 0
    items = session.scalars(select(Ticket).where(*conditions).order_by(Ticket.id).limit(limit).offset(offset)).all()
    return list(items), int(count)


def queue_counts(session: Session) -> dict[str, dict[str, int]]:
    """{queue: {status: count}} over all tickets."""
    rows = session.execute(select(Ticket.queue, Ticket.status, func.count()).group_by(Ticket.queue, Ticket.status)).all()
    out: dict[str, dict[str, int]] = {}
    for queue, status, n in rows:
        out.setdefault(queue, {})[status] = int(n)
    return out


def add_feedback(session: Session, *, ticket: Ticket, category: str, agent: str, note: str | None, rules: RoutingRules) -> Feedback:
    """Record an agent's correction and re-route the ticket to the corrected category's queue."""
    feedback = Feedback(
        ticket_id=ticket.id,
        agent=agent,
        previous_category=ticket.category,
        previous_queue=ticket.queue,
        category=category,
        queue=rules.queue_of(category),
        note=note,
    )
    ticket.category = category
    ticket.queue = feedback.queue
    ticket.status = TicketStatus.CORRECTED
    ticket.updated_at = utcnow()
    session.add(feedback)
    session.flush()
    session.refresh(ticket, attribute_names=["feedback"])
    return feedback


def unclassified_tickets(session: Session, *, limit: int) -> list[Ticket]:
    stmt = select(Ticket).where(Ticket.status == TicketStatus.UNCLASSIFIED).order_by(Ticket.classify_attempts, Ticket.id).limit(limit)
    return list(session.scalars(stmt).all())


def corrected_tickets(session: Session, *, since: datetime | None = None, batch: int = 500) -> Iterator[Ticket]:
    """Every ticket with at least one correction, in id order (streamed in batches)."""
    last_id = 0
    while True:
        stmt = select(Ticket).where(Ticket.id > last_id, Ticket.feedback.any())
        if since is not None:
            stmt = stmt.where(Ticket.updated_at >= since)
        rows = list(session.scalars(stmt.order_by(Ticket.id).limit(batch)).all())
        if not rows:
            return
        yield from rows
        last_id = rows[-1].id


def create_api_key(session: Session, *, name: str, role: str, key_hash: str, prefix: str) -> ApiKey:
    key = ApiKey(name=name, role=role, key_hash=key_hash, prefix=prefix)
    session.add(key)
    session.flush()
    return key


def get_api_key(session: Session, *, key_hash: str) -> ApiKey | None:
    return session.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))).first()
