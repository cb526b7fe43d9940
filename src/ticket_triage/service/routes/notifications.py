"""/v1/notifications: the outbox of e-mails and webhooks announcing routed tickets (agents)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, status

from .. import crud
from ..deps import AgentDep, SessionDep, StateDep
from ..models import Notification, NotificationKind, NotificationStatus
from ..notify import redact_target
from ..schemas import Message, NotificationPublic, NotificationsPublic

router = APIRouter(prefix="/v1", tags=["notifications"])


def _public(n: Notification) -> NotificationPublic:
    public = NotificationPublic.model_validate(n)
    return public.model_copy(update={
        "target": redact_target(n.kind, n.target),
        "next_attempt_at": n.next_attempt_at if n.status in NotificationStatus.OPEN else None,
    })


def _bad_query(name: str, value: str, allowed) -> HTTPException:
    return HTTPException(
        422, [{"loc": ["query", name], "msg": f"unknown {name} {value!r}; use one of {list(allowed)}", "type": "value_error", "input": value}]
    )


@router.get("/notifications", response_model=NotificationsPublic)
def list_notifications(
    session: SessionDep,
    _: AgentDep,
    status_: str | None = Query(None, alias="status", description=f"one of {', '.join(NotificationStatus.ALL)}"),
    ticket_id: int | None = Query(None, ge=1),
    kind: str | None = Query(None, description="email or webhook"),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> NotificationsPublic:
    """Notifications (e-mails and webhooks for routed tickets), oldest first, filtered by status,
    ticket and kind, paginated; failed and skipped ones say why in `last_error`."""
    if status_ is not None and status_ not in NotificationStatus.ALL:
        raise _bad_query("status", status_, NotificationStatus.ALL)
    if kind is not None and kind not in NotificationKind.ALL:
        raise _bad_query("kind", kind, NotificationKind.ALL)
    items, count = crud.list_notifications(session, status=status_, ticket_id=ticket_id, kind=kind, limit=limit, offset=offset)
    return NotificationsPublic(items=[_public(n) for n in items], count=count, limit=limit, offset=offset)


@router.post("/notifications/{notification_id}/retry", response_model=NotificationPublic, responses={404: {"model": Message}, 409: {"model": Message}})
def retry_notification(notification_id: int, session: SessionDep, state: StateDep, _: AgentDep) -> NotificationPublic:
    """Send a `failed` or `skipped` notification again (e.g. after fixing the webhook or
    configuring SMTP); its attempts start over."""
    n = crud.get_notification(session, notification_id=notification_id)
    if n is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no notification {notification_id}")
    if n.status not in (NotificationStatus.FAILED, NotificationStatus.SKIPPED):
        raise HTTPException(status.HTTP_409_CONFLICT, f"notification {notification_id} is {n.status}; only failed or skipped ones can be retried")
    crud.retry_notification(session, notification=n)
    session.commit()
    state.kick_notifications()
    return _public(n)
