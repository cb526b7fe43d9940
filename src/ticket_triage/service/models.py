"""Database tables (SQLAlchemy 2 declarative). The schema itself is created by Alembic migrations."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text, TypeDecorator, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on every database (SQLite keeps no offset: stored as UTC, read back as UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    pass


class TicketStatus:
    """Where a ticket stands. Plain strings in the database, so reports can read them."""

    ROUTED = "routed"  # classified with enough confidence, in its team's queue
    NEEDS_REVIEW = "needs-review"  # classified below the threshold: in the review queue
    UNCLASSIFIED = "unclassified"  # the model failed; the retry loop will classify it
    CORRECTED = "corrected"  # an agent set the category; re-routed
    CONFIRMED = "confirmed"  # an agent accepted the model's category (never counted as a correction)

    ALL = (ROUTED, NEEDS_REVIEW, UNCLASSIFIED, CORRECTED, CONFIRMED)


class WorkState:
    """Who is on a ticket, apart from where it is routed: new tickets are open."""

    OPEN = "open"
    ASSIGNED = "assigned"  # an agent (`Ticket.assignee`) works on it
    DONE = "done"  # answered: no longer counted as a queue's open work

    ALL = (OPEN, ASSIGNED, DONE)


class FeedbackKind:
    CORRECTION = "correction"  # the agent set another category (retraining data)
    CONFIRMATION = "confirmation"  # the agent accepted the model's category

    ALL = (CORRECTION, CONFIRMATION)


class Ticket(Base):
    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    channel: Mapped[str] = mapped_column(String(32))
    customer_ref: Mapped[str | None] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)  # uq_tickets_idempotency_key
    request_hash: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), index=True)
    category: Mapped[str | None] = mapped_column(String(100), index=True)
    confidence: Mapped[float | None] = mapped_column(Float)
    probabilities: Mapped[dict[str, float] | None] = mapped_column(JSON)
    predicted_category: Mapped[str | None] = mapped_column(String(100))
    queue: Mapped[str] = mapped_column(String(100), index=True)
    model_version: Mapped[str | None] = mapped_column(String(200))
    classify_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    work_state: Mapped[str] = mapped_column(
        String(10), default=WorkState.OPEN, server_default=WorkState.OPEN, index=True
    )
    assignee: Mapped[str | None] = mapped_column(String(200))

    feedback: Mapped[list["Feedback"]] = relationship(back_populates="ticket", order_by="Feedback.id", lazy="selectin")

    @property
    def text(self) -> str:
        """What the classifier reads: the subject (if any) and the body."""
        return f"{self.subject}\n\n{self.body}" if self.subject else self.body


class Feedback(Base):
    """An agent's correction of a ticket's category: who, when, from what to what."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    agent: Mapped[str] = mapped_column(String(200))
    previous_category: Mapped[str | None] = mapped_column(String(100))
    previous_queue: Mapped[str] = mapped_column(String(100))
    category: Mapped[str] = mapped_column(String(100))
    queue: Mapped[str] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(
        String(12), default=FeedbackKind.CORRECTION, server_default=FeedbackKind.CORRECTION
    )
    model_version: Mapped[str | None] = mapped_column(String(200))  # whose prediction was corrected or confirmed
    idempotency_key: Mapped[str | None] = mapped_column(String(200))  # unique per ticket (ix_feedback_ticket_key)

    ticket: Mapped[Ticket] = relationship(back_populates="feedback")


class WorkLog(Base):
    """A change of a ticket's work state (open, assigned to someone, done): who, when, to what."""

    __tablename__ = "work_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    agent: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(10))
    assignee: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)


class User(Base):
    """A person who signs in to the console (API keys stay for machines); password hashed with argon2id."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(200), unique=True)  # uq_users_username
    role: Mapped[str] = mapped_column(String(20))  # agent | admin
    password_hash: Mapped[str | None] = mapped_column(String(200))  # None: only through the proxy's user header
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ApiKey(Base):
    """An API key, stored as its SHA-256 (keys are 256-bit random, so a fast hash is enough)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class NotificationStatus:
    """Where an outbox row stands. `pending` and `sending` are open; the other three are final."""

    PENDING = "pending"  # waiting for its (next) attempt at `next_attempt_at`
    SENDING = "sending"  # claimed by a deliverer until `next_attempt_at` (then claimable again)
    SENT = "sent"
    FAILED = "failed"  # gave up: permanent error, or the last allowed attempt failed (`last_error`)
    SKIPPED = "skipped"  # not sendable here (e.g. e-mail without an SMTP server); `last_error` says why

    ALL = (PENDING, SENDING, SENT, FAILED, SKIPPED)
    OPEN = (PENDING, SENDING)


class NotificationKind:
    EMAIL = "email"
    WEBHOOK = "webhook"

    ALL = (EMAIL, WEBHOOK)


class Notification(Base):
    """The outbox: one row per message to send (a queue's e-mail or webhook), added in the same
    transaction as the ticket change it announces, delivered later by `notify.Deliverer`."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # None for a message about no ticket (a drift alarm, migration 0004)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    event: Mapped[str] = mapped_column(String(20))  # created | rerouted | classified | drift
    kind: Mapped[str] = mapped_column(String(10))  # email | webhook
    target: Mapped[str] = mapped_column(String(2000))  # the address or URL (from the routing rules at the time)
    queue: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # the ticket as it was at the event
    status: Mapped[str] = mapped_column(String(10), default=NotificationStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DriftAlarm(Base):
    """A drift alarm: in `window` [window_start, window_end) the metric (category mix or
    confidence) moved `value` (PSI) from the reference, more than `threshold`. At most one per
    metric and window (the unique index), whatever the number of replicas checking."""

    __tablename__ = "drift_alarms"
    __table_args__ = (Index("uq_drift_alarms_metric_window", "metric", "window_start", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    metric: Mapped[str] = mapped_column(String(40))  # category_mix | confidence
    value: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    window: Mapped[str] = mapped_column(String(10))  # day | week
    window_start: Mapped[datetime] = mapped_column(UTCDateTime())
    window_end: Mapped[datetime] = mapped_column(UTCDateTime())
    tickets: Mapped[int] = mapped_column(Integer)  # tickets in the window
    reference: Mapped[str] = mapped_column(String(200))  # what was compared against, in words
    reference_start: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reference_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    model_version: Mapped[str | None] = mapped_column(String(200))
    p_value: Mapped[float | None] = mapped_column(Float)  # chi-square test of the mix (None for confidence)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # both distributions


class Explanation(Base):
    """A ticket's word attributions (explain.py), computed on first request and kept per model
    version and method: an explanation costs seconds of CPU, a read of this row microseconds."""

    __tablename__ = "explanations"
    __table_args__ = (UniqueConstraint("ticket_id", "model_version", "method", name="uq_explanations_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    model_version: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ShadowPrediction(Base):
    """What a shadow (candidate) model predicted for a live ticket, beside the active model's
    prediction. Never used for routing: only to judge the candidate before promoting it."""

    __tablename__ = "shadow_predictions"
    __table_args__ = (Index("ix_shadow_predictions_version", "model_version", "ticket_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    model_version: Mapped[str] = mapped_column(String(200))  # the shadow's version
    category: Mapped[str] = mapped_column(String(100))
    confidence: Mapped[float] = mapped_column(Float)
    probabilities: Mapped[dict[str, float]] = mapped_column(JSON)
    active_version: Mapped[str | None] = mapped_column(String(200))  # the version that routed the ticket
    active_category: Mapped[str | None] = mapped_column(String(100))  # and what it predicted
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
