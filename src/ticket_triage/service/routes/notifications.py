"""/v1/notifications: the outbox of e-mails and webhooks announcing routed tickets (agents)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, Query, status

from .. import crud
from ..deps import AgentDep, SessionDep, StateDep
from ..models import Notification, NotificationKind, NotificationStatus
from ..notify import redact_target
from ..schemas import DB_INT_MAX, Message, NotificationPublic, NotificationsPublic
from ._limits import AUTH, DATABASE, NOT_FOUND, GuardedRoute, Limit, NotificationId, Offset

router = APIRouter(prefix="/v1", tags=["notifications"], route_class=GuardedRoute)


def _public(n: Notification) -> NotificationPublic:
    public = NotificationPublic.model_validate(n)
    return public.model_copy(
        update={
            "target": redact_target(n.kind, n.target),
            "next_attempt_at": n.next_attempt_at if n.status in NotificationStatus.OPEN else None,
        }
    )


@router.get("/notifications", response_model=NotificationsPublic, responses={**AUTH, **DATABASE})
def list_notifications(
    session: SessionDep,
    _: AgentDep,
    status_: Literal[*NotificationStatus.ALL] | None = Query(None, alias="status"),
    ticket_id: int | None = Query(None, ge=1, le=DB_INT_MAX),
    kind: Literal[*NotificationKind.ALL] | None = Query(None),
    limit: Limit = 50,
    offset: Offset = 0,
) -> NotificationsPublic:
    """Notifications (e-mails and webhooks for routed tickets), oldest first, filtered by status,
    ticket and kind, paginated; failed and skipped ones say why in `last_error`."""
    items, count = crud.list_notifications(
        session, status=status_, ticket_id=ticket_id, kind=kind, limit=limit, offset=offset
    )
    return NotificationsPublic(items=[_public(n) for n in items], count=count, limit=limit, offset=offset)


@router.post(
    "/notifications/{notification_id}/retry",
    response_model=NotificationPublic,
    responses={**NOT_FOUND, 409: {"model": Message}, **AUTH, **DATABASE},
)
def retry_notification(
    notification_id: NotificationId, session: SessionDep, state: StateDep, _: AgentDep
) -> NotificationPublic:
    """Send a `failed` or `skipped` notification again (e.g. after fixing the webhook or
    configuring SMTP); its attempts start over."""
    n = crud.get_notification(session, notification_id=notification_id)
    if n is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no notification {notification_id}")
    if n.status not in (NotificationStatus.FAILED, NotificationStatus.SKIPPED):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"notification {notification_id} is {n.status}; only failed or skipped ones can be retried",
        )
    crud.retry_notification(session, notification=n)
    session.commit()
    state.kick_notifications()
    return _public(n)
