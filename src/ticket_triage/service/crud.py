"""Database operations, keyword-only, each on a Session the caller owns (and commits)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any, Iterator

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from .models import ApiKey, Feedback, Notification, NotificationStatus, Ticket, TicketStatus, utcnow
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
    enqueue_notifications(session, ticket=ticket, rules=rules, event="created")
    return ticket


def get_ticket(session: Session, *, ticket_id: int) -> Ticket | None:
    return session.get(Ticket, ticket_id)


def get_ticket_by_idempotency_key(session: Session, *, key: str) -> Ticket | None:
    return session.scalars(select(Ticket).where(Ticket.idempotency_key == key)).first()


def _page(session: Session, model, conditions: list, *, limit: int, offset: int) -> tuple[list, int]:
    """One page of `model` rows matching `conditions`, oldest id first, and how many match in all."""
    count = session.scalar(select(func.count()).select_from(model).where(*conditions)) or 0
    items = session.scalars(select(model).where(*conditions).order_by(model.id).limit(limit).offset(offset)).all()
    return list(items), int(count)


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
    return _page(session, Ticket, conditions, limit=limit, offset=offset)


def queue_counts(session: Session) -> dict[str, dict[str, int]]:
    """{queue: {status: count}} over all tickets."""
    rows = session.execute(
        select(Ticket.queue, Ticket.status, func.count()).group_by(Ticket.queue, Ticket.status)
    ).all()
    out: dict[str, dict[str, int]] = {}
    for queue, status, n in rows:
        out.setdefault(queue, {})[status] = int(n)
    return out


def add_feedback(
    session: Session, *, ticket: Ticket, category: str, agent: str, note: str | None, rules: RoutingRules
) -> Feedback:
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
    enqueue_notifications(session, ticket=ticket, rules=rules, event="rerouted", previous_queue=feedback.previous_queue)
    session.add(feedback)
    session.flush()
    session.refresh(ticket, attribute_names=["feedback"])
    return feedback


def unclassified_tickets(session: Session, *, limit: int) -> list[Ticket]:
    stmt = (
        select(Ticket)
        .where(Ticket.status == TicketStatus.UNCLASSIFIED)
        .order_by(Ticket.classify_attempts, Ticket.id)
        .limit(limit)
    )
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
    """The key with this hash, revoked or not (the caller tells a revoked key from an unknown one)."""
    return session.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash)).first()


def list_api_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)).all())


def find_api_keys(session: Session, *, ident: str, key_hash: str | None = None) -> list[ApiKey]:
    """Keys whose prefix or name is `ident` (or whose hash is `key_hash`: the whole key was given)."""
    conditions = [ApiKey.prefix == ident, ApiKey.name == ident]
    if key_hash is not None:
        conditions.append(ApiKey.key_hash == key_hash)
    return list(session.scalars(select(ApiKey).where(or_(*conditions)).order_by(ApiKey.id)).all())


def revoke_api_key(session: Session, *, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key


# -- notifications (a transactional outbox) ------------------------------------------------------
# Events: "created" (a new ticket lands in a queue), "rerouted" (an agent's correction moved it
# to another queue), "classified" (an unclassified ticket was classified later and moved).
NOTIFICATION_EVENTS = ("created", "rerouted", "classified")


def notification_payload(ticket: Ticket, *, event: str, previous_queue: str | None) -> dict[str, Any]:
    """What a notification says about the ticket, frozen at the event (later changes have their own)."""
    return {
        "ticket_id": ticket.id,
        "event": event,
        "category": ticket.category,
        "confidence": ticket.confidence,
        "queue": ticket.queue,
        "previous_queue": previous_queue,
        "status": ticket.status,
        "subject": ticket.subject or "",
        "channel": ticket.channel,
        "created_at": (ticket.created_at or utcnow()).isoformat(),
    }


def enqueue_notifications(
    session: Session, *, ticket: Ticket, rules: RoutingRules, event: str, previous_queue: str | None = None
) -> list[Notification]:
    """Add outbox rows announcing `ticket` in its queue, one per target of that queue (its
    category's `email` and/or `webhook`; for the review queue `review_email`/`review_webhook`),
    in the caller's transaction: they commit, or roll back, with the ticket change. Nothing is
    added when the queue has no target, or when `previous_queue` is given and equals the
    ticket's queue (a correction that keeps the ticket where it was announced)."""
    if event not in NOTIFICATION_EVENTS:
        raise ValueError(f"unknown notification event {event!r}")
    if previous_queue is not None and previous_queue == ticket.queue:
        return []
    targets = rules.targets(ticket.queue, ticket.category)
    if not targets:
        return []
    if ticket.id is None:
        session.flush()
    payload = notification_payload(ticket, event=event, previous_queue=previous_queue)
    now = utcnow()
    rows = [
        Notification(
            ticket_id=ticket.id,
            event=event,
            kind=kind,
            target=target,
            queue=ticket.queue,
            payload=payload,
            status=NotificationStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        for kind, target in targets
    ]
    session.add_all(rows)
    return rows


def prune_notifications(session: Session, *, before: datetime) -> int:
    """Delete finished (sent, failed, skipped) outbox rows last touched before `before`; open
    ones stay whatever their age. Returns how many were deleted."""
    from sqlalchemy import delete

    finished = [s for s in NotificationStatus.ALL if s not in NotificationStatus.OPEN]
    result = session.execute(
        delete(Notification).where(Notification.status.in_(finished), Notification.updated_at < before)
    )
    return int(result.rowcount or 0)


def list_notifications(
    session: Session,
    *,
    status: str | None = None,
    ticket_id: int | None = None,
    kind: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Notification], int]:
    conditions = []
    if status is not None:
        conditions.append(Notification.status == status)
    if ticket_id is not None:
        conditions.append(Notification.ticket_id == ticket_id)
    if kind is not None:
        conditions.append(Notification.kind == kind)
    return _page(session, Notification, conditions, limit=limit, offset=offset)


def get_notification(session: Session, *, notification_id: int) -> Notification | None:
    return session.get(Notification, notification_id)


def claim_notifications(session: Session, *, limit: int, lease_s: float, max_attempts: int) -> list[Notification]:
    """Claim up to `limit` due notifications for this deliverer: each becomes `sending` until
    now + `lease_s` with one more attempt counted. Rows another deliverer holds are skipped
    (FOR UPDATE SKIP LOCKED on PostgreSQL), and each claim is a conditional UPDATE on the
    status and attempt count it read, so two deliverers never both win a row, on any database.
    A `sending` row whose lease ran out (its deliverer died) is due again; if it has used every
    attempt it is marked failed instead. Returns the claimed rows (commit to make the claim)."""
    now = utcnow()
    stmt = (
        select(Notification)
        .where(Notification.status.in_(NotificationStatus.OPEN), Notification.next_attempt_at <= now)
        .order_by(Notification.next_attempt_at, Notification.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    table = Notification.__table__
    claimed: list[Notification] = []
    for row in session.scalars(stmt).all():
        seen = (table.c.id == row.id, table.c.status == row.status, table.c.attempts == row.attempts)
        if row.status == NotificationStatus.SENDING and row.attempts >= max_attempts:
            session.execute(
                update(table)
                .where(*seen)
                .values(
                    status=NotificationStatus.FAILED,
                    updated_at=now,
                    last_error=(row.last_error or "")
                    + " [no outcome recorded for the last attempt: the deliverer stopped while sending]",
                )
            )
            continue
        won = session.execute(
            update(table)
            .where(*seen)
            .values(
                status=NotificationStatus.SENDING,
                attempts=row.attempts + 1,
                next_attempt_at=now + timedelta(seconds=lease_s),
                updated_at=now,
            )
        )
        if won.rowcount == 1:
            session.expire(row)
            claimed.append(row)
    for row in claimed:
        session.refresh(row)
    return claimed


def finish_notification(
    session: Session,
    *,
    notification_id: int,
    attempt: int,
    status: str,
    error: str | None = None,
    retry_at: datetime | None = None,
) -> bool:
    """Record an attempt's outcome, only if this deliverer still holds the claim (same attempt,
    still `sending`); False if the row was claimed by another deliverer meanwhile."""
    table = Notification.__table__
    now = utcnow()
    values: dict[str, Any] = {"status": status, "updated_at": now, "last_error": error}
    if status == NotificationStatus.SENT:
        values["sent_at"] = now
    if retry_at is not None:
        values["next_attempt_at"] = retry_at
    result = session.execute(
        update(table)
        .where(table.c.id == notification_id, table.c.attempts == attempt, table.c.status == NotificationStatus.SENDING)
        .values(**values)
    )
    return result.rowcount == 1


def unclaim_notification(session: Session, *, notification_id: int, attempt: int, retry_at: datetime) -> bool:
    """Hand back a claimed notification that was not attempted (its target was busy): pending
    again at `retry_at`, the claim's attempt not counted. False if the claim was lost."""
    table = Notification.__table__
    result = session.execute(
        update(table)
        .where(table.c.id == notification_id, table.c.attempts == attempt, table.c.status == NotificationStatus.SENDING)
        .values(status=NotificationStatus.PENDING, attempts=attempt - 1, next_attempt_at=retry_at, updated_at=utcnow())
    )
    return result.rowcount == 1


def retry_notification(session: Session, *, notification: Notification) -> Notification:
    """Send a failed or skipped notification again (attempts start over)."""
    notification.status = NotificationStatus.PENDING
    notification.attempts = 0
    notification.next_attempt_at = utcnow()
    notification.last_error = None
    session.flush()
    return notification
