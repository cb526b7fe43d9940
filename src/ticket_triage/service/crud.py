"""Database operations, keyword-only, each on a Session the caller owns (and commits)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any, Iterator

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from .models import (
    ApiKey,
    Feedback,
    FeedbackKind,
    Notification,
    NotificationStatus,
    Ticket,
    TicketStatus,
    WorkLog,
    WorkState,
    utcnow,
)
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


def _page(session: Session, model, conditions: list, *, limit: int, offset: int, order=None) -> tuple[list, int]:
    """One page of `model` rows matching `conditions` (in `order`, by default oldest id first), and how many match in all."""
    count = session.scalar(select(func.count()).select_from(model).where(*conditions)) or 0
    order = (model.id,) if order is None else order
    items = session.scalars(select(model).where(*conditions).order_by(*order).limit(limit).offset(offset)).all()
    return list(items), int(count)


# How GET /v1/tickets and the console can order a list. Ids grow with created_at, and the id
# breaks ties, so paging is stable whatever the clock did.
TICKET_SORTS = ("newest", "oldest-open")


def list_tickets(
    session: Session,
    *,
    queue: str | None = None,
    category: str | None = None,
    status: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    q: str | None = None,
    work_state: str | None = None,
    channel: str | None = None,
    confidence_min: float | None = None,
    confidence_max: float | None = None,
    assignee: str | None = None,
    sort: str = "newest",
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Ticket], int]:
    """One page of tickets and how many match in all (for "1-50 of N"). Every filter is optional
    and they combine (AND): `q` is free-text search (search.py: every word in the subject or
    body); created_from inclusive, created_to exclusive; confidence_min/max bound the model's
    confidence (inclusive; unclassified tickets have none and never match a bound).
    `sort`: "newest" (default, newest first) or "oldest-open" (open work first, oldest first,
    then done tickets): the order a team works a queue in."""
    if sort not in TICKET_SORTS:
        raise ValueError(f"unknown sort {sort!r}: use one of {', '.join(TICKET_SORTS)}")
    conditions = []
    for column, value in (
        (Ticket.queue, queue),
        (Ticket.category, category),
        (Ticket.status, status),
        (Ticket.work_state, work_state),
        (Ticket.channel, channel),
        (Ticket.assignee, assignee),
    ):
        if value is not None:
            conditions.append(column == value)
    if created_from is not None:
        conditions.append(Ticket.created_at >= created_from)
    if created_to is not None:
        conditions.append(Ticket.created_at < created_to)
    if confidence_min is not None:
        conditions.append(Ticket.confidence >= confidence_min)
    if confidence_max is not None:
        conditions.append(Ticket.confidence <= confidence_max)
    if q is not None:
        from .search import matching

        conditions.append(matching(session, q))
    if sort == "newest":
        order = (Ticket.id.desc(),)
    else:
        done_last = case((Ticket.work_state == WorkState.DONE, 1), else_=0)
        order = (done_last, Ticket.id)
    return _page(session, Ticket, conditions, limit=limit, offset=offset, order=order)


def queue_counts(session: Session, *, open_only: bool = True) -> dict[str, dict[str, int]]:
    """{queue: {status: count}} of open work (work_state not "done"), or of every ticket with
    open_only=False. A queue's open work is the sum of its counts."""
    stmt = select(Ticket.queue, Ticket.status, func.count()).group_by(Ticket.queue, Ticket.status)
    if open_only:
        stmt = stmt.where(Ticket.work_state != WorkState.DONE)
    out: dict[str, dict[str, int]] = {}
    for queue, status, n in session.execute(stmt).all():
        out.setdefault(queue, {})[status] = int(n)
    return out


def queue_summary(session: Session, *, queues: list[str], since_id: int | None = None) -> list[dict[str, Any]]:
    """Every queue of `queues` (the routing rules' queues) and any other holding tickets, in that
    order, as {"queue", "count": open work, "total": all tickets, "open_by_status": {status: n}
    of open work, "latest_id": the newest ticket's id or None, "new": tickets with id > since_id
    (None without since_id)}. The console polls this to say "N new tickets"."""
    open_counts = queue_counts(session)
    totals = dict(session.execute(select(Ticket.queue, func.count()).group_by(Ticket.queue)).all())
    latest = dict(session.execute(select(Ticket.queue, func.max(Ticket.id)).group_by(Ticket.queue)).all())
    new: dict[str, int] = {}
    if since_id is not None:
        stmt = select(Ticket.queue, func.count()).where(Ticket.id > since_id).group_by(Ticket.queue)
        new = dict(session.execute(stmt).all())
    names = list(dict.fromkeys(list(queues) + sorted(totals)))
    return [
        {
            "queue": q,
            "count": sum(open_counts.get(q, {}).values()),
            "total": int(totals.get(q, 0)),
            "open_by_status": open_counts.get(q, {}),
            "latest_id": latest.get(q),
            "new": int(new.get(q, 0)) if since_id is not None else None,
        }
        for q in names
    ]


def queue_exists(session: Session, *, queue: str, rules: RoutingRules) -> bool:
    """Whether `queue` is one of the routing rules' queues or holds tickets (an old rule's queue)."""
    if queue in rules.queues:
        return True
    return session.scalar(select(Ticket.id).where(Ticket.queue == queue).limit(1)) is not None


def feedback_kind(ticket: Ticket, category: str) -> str | None:
    """What an agent's "this ticket is `category`" means for `ticket`: a confirmation (the
    model's category, not yet corrected or confirmed), a correction (another category), or None:
    nothing to record (the category it already has: a repeated save or a double click)."""
    if category != ticket.category:
        return FeedbackKind.CORRECTION
    if ticket.status in (TicketStatus.CORRECTED, TicketStatus.CONFIRMED):
        return None
    return FeedbackKind.CONFIRMATION


def feedback_by_key(session: Session, *, ticket: Ticket, key: str) -> Feedback | None:
    """The feedback already recorded on `ticket` under the Idempotency-Key `key`."""
    stmt = select(Feedback).where(Feedback.ticket_id == ticket.id, Feedback.idempotency_key == key)
    return session.scalars(stmt).first()


def add_feedback(
    session: Session,
    *,
    ticket: Ticket,
    category: str,
    agent: str,
    note: str | None,
    rules: RoutingRules,
    idempotency_key: str | None = None,
) -> Feedback | None:
    """Record an agent's verdict on `ticket` (the caller checks `category` is a label):
    - another category: a correction, the ticket is re-routed to that category's queue (status corrected);
    - the model's category, not yet judged: a confirmation (status confirmed; a review ticket
      moves to its category's queue, as after a correction);
    - the category it already has once judged, or an `idempotency_key` already used on this
      ticket: nothing is written, None is returned (double clicks and no-op saves are harmless)."""
    for _ in range(3):
        if idempotency_key is not None and feedback_by_key(session, ticket=ticket, key=idempotency_key) is not None:
            return None
        kind = feedback_kind(ticket, category)
        if kind is None:
            return None
        if _claim(session, ticket):
            break
        # Another request changed the ticket since it was read (a double click's twin, another
        # agent): judge again on what it is now, so the twin finds nothing left to record.
        session.refresh(ticket)
    else:
        raise OperationalError("claiming the ticket", None, Exception("the ticket kept changing: retry"))
    feedback = Feedback(
        ticket_id=ticket.id,
        agent=agent,
        previous_category=ticket.category,
        previous_queue=ticket.queue,
        category=category,
        queue=rules.queue_of(category),
        note=note,
        kind=kind,
        model_version=ticket.model_version,
        idempotency_key=idempotency_key,
    )
    ticket.updated_at = utcnow()
    ticket.category = category
    # A confirmed review ticket leaves the review queue for its category's team, as a corrected one does.
    ticket.queue = feedback.queue
    ticket.status = TicketStatus.CONFIRMED if kind == FeedbackKind.CONFIRMATION else TicketStatus.CORRECTED
    enqueue_notifications(session, ticket=ticket, rules=rules, event="rerouted", previous_queue=feedback.previous_queue)
    session.add(feedback)
    session.flush()
    session.refresh(ticket, attribute_names=["feedback"])
    return feedback


def _claim(session: Session, ticket: Ticket) -> bool:
    """Optimistic lock: bump `updated_at` only if nobody changed the ticket since it was read.
    Two identical requests at the same moment then write one record, on SQLite and PostgreSQL
    alike (the second's UPDATE matches no row once the first has committed)."""
    now = utcnow()
    claimed = session.execute(
        update(Ticket)
        .where(Ticket.id == ticket.id, Ticket.updated_at == ticket.updated_at)
        .values(updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if claimed:
        set_committed_value(ticket, "updated_at", now)
    return bool(claimed)


def set_work_state(
    session: Session, *, ticket: Ticket, state: str, assignee: str | None, agent: str, note: str | None = None
) -> WorkLog | None:
    """Move `ticket` to work state `state` (open, assigned, done) and log who did it. Open clears
    the assignee; done keeps it (who finished it); assigned needs one (the caller defaults it to
    itself). The state and assignee it already has: nothing is written, None is returned."""
    if state not in WorkState.ALL:
        raise ValueError(f"unknown work state {state!r}: use one of {', '.join(WorkState.ALL)}")
    if state == WorkState.ASSIGNED and not assignee:
        raise ValueError("assigning a ticket needs an assignee")
    if state == WorkState.OPEN:
        assignee = None
    elif state == WorkState.DONE and assignee is None:
        assignee = ticket.assignee
    if ticket.work_state == state and ticket.assignee == assignee:
        return None
    ticket.work_state = state
    ticket.assignee = assignee
    ticket.updated_at = utcnow()
    event = WorkLog(ticket_id=ticket.id, agent=agent, state=state, assignee=assignee, note=note)
    session.add(event)
    session.flush()
    return event


def ticket_history(session: Session, *, ticket: Ticket) -> list[dict[str, Any]]:
    """What happened to `ticket`, oldest first, as contract B's events: the model's prediction
    ({"kind": "prediction", "by": "model", "category", "model_version", "confidence"}), each
    correction and confirmation ({"by", "category", "from", "note", "model_version"}), and
    each work-state change ({"by", "state", "assignee", "note"}); every event has "at" and "kind"."""
    events: list[dict[str, Any]] = []
    if ticket.predicted_category is not None:
        events.append(
            {
                "at": ticket.created_at,
                "kind": "prediction",
                "by": "model",
                "category": ticket.predicted_category,
                "model_version": ticket.model_version,
                "confidence": ticket.confidence,
            }
        )
    for fb in ticket.feedback:
        events.append(
            {
                "at": fb.created_at,
                "kind": fb.kind,
                "by": fb.agent,
                "category": fb.category,
                "from": fb.previous_category,
                "note": fb.note,
                "model_version": fb.model_version,
            }
        )
    logs = session.scalars(select(WorkLog).where(WorkLog.ticket_id == ticket.id).order_by(WorkLog.id)).all()
    for log in logs:
        events.append(
            {
                "at": log.created_at,
                "kind": "work",
                "by": log.agent,
                "state": log.state,
                "assignee": log.assignee,
                "note": log.note,
            }
        )
    return sorted(events, key=lambda e: e["at"])  # stable: same-instant events keep their order


def agent_counts(session: Session, *, since: datetime | None = None) -> dict[str, dict[str, int]]:
    """{agent: {"correction": n, "confirmation": n, "done": n}}: per-agent counts for the team view
    (since `since`, if given)."""
    out: dict[str, dict[str, int]] = {}

    def row(agent: str) -> dict[str, int]:
        return out.setdefault(agent, {"correction": 0, "confirmation": 0, "done": 0})

    stmt = select(Feedback.agent, Feedback.kind, func.count()).group_by(Feedback.agent, Feedback.kind)
    if since is not None:
        stmt = stmt.where(Feedback.created_at >= since)
    for agent, kind, n in session.execute(stmt).all():
        row(agent)[kind] = int(n)
    stmt = select(WorkLog.agent, func.count()).where(WorkLog.state == WorkState.DONE).group_by(WorkLog.agent)
    if since is not None:
        stmt = stmt.where(WorkLog.created_at >= since)
    for agent, n in session.execute(stmt).all():
        row(agent)["done"] = int(n)
    return out


def unclassified_tickets(session: Session, *, limit: int) -> list[Ticket]:
    stmt = (
        select(Ticket)
        .where(Ticket.status == TicketStatus.UNCLASSIFIED)
        .order_by(Ticket.classify_attempts, Ticket.id)
        .limit(limit)
    )
    return list(session.scalars(stmt).all())


def corrected_tickets(session: Session, *, since: datetime | None = None, batch: int = 500) -> Iterator[Ticket]:
    """Every ticket with at least one correction (confirmations are none), in id order (streamed in batches)."""
    last_id = 0
    corrected = Ticket.feedback.any(Feedback.kind == FeedbackKind.CORRECTION)
    while True:
        stmt = select(Ticket).where(Ticket.id > last_id, corrected)
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
    rows = outbox_rows(targets, ticket_id=ticket.id, event=event, queue=ticket.queue, payload=payload)
    session.add_all(rows)
    return rows


def outbox_rows(
    targets, *, ticket_id: int | None, event: str, queue: str, payload: dict[str, Any]
) -> list[Notification]:
    """One pending outbox row per (kind, target), due now: a ticket's announcement or a drift alarm (no ticket)."""
    now = utcnow()
    return [
        Notification(
            ticket_id=ticket_id,
            event=event,
            kind=kind,
            target=target,
            queue=queue,
            payload=payload,
            status=NotificationStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        for kind, target in targets
    ]


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
