"""Delivery of the notification outbox: webhooks (HTTP POST of JSON, optionally HMAC-signed)
and e-mails (SMTP), with retries and exponential back-off.

The rows are written by `crud.enqueue_notifications` in the same transaction as the ticket
change they announce; this module only sends them. One `Deliverer` runs in each service
process (started and stopped by `ServiceState`); several replicas share the table safely:
each claims a batch (`crud.claim_notifications`: FOR UPDATE SKIP LOCKED on PostgreSQL, and a
conditional UPDATE everywhere) for a lease, sends it, and records the outcome only if it still
holds the claim. Delivery is at-least-once: a process that dies after sending but before
recording sends again after the lease (receivers de-duplicate on `X-Triage-Delivery`).
Each notification is sent on its own task, with a limit per target host and in all, so one
hanging receiver delays only its own notifications (see `Deliverer`).

Secrets (the webhook secret, the SMTP password) are never logged nor stored; log lines name
a notification by id, kind and queue, never by its URL (webhook URLs often hold tokens), and
httpx's own request log line shows scheme and host only (`_RedactURLs`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from .. import __version__
from . import crud
from .metrics import ServiceMetrics
from .models import NotificationKind, NotificationStatus, utcnow
from .settings import Settings
from .tasks import cancel_and_wait

log = logging.getLogger("ticket_triage.service.notify")

SIGNATURE_HEADER = "X-Triage-Signature-256"
NO_SMTP = "e-mail not sent: no SMTP server is configured (set TRIAGE_SMTP_HOST, then retry it with POST /v1/notifications/{id}/retry)"
_RETRYABLE_HTTP = {408, 425, 429}


@dataclass(frozen=True)
class Job:
    """A claimed notification, detached from its session."""

    id: int
    ticket_id: int
    kind: str
    target: str
    event: str
    queue: str
    attempt: int
    payload: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    job: Job
    status: str  # sent | skipped | failed (permanent) | retry
    error: str | None = None


class PermanentError(Exception):
    """Retrying cannot help (refused by the receiver): the notification fails at once."""


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: `sha256=` + hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def redact_target(kind: str, target: str) -> str:
    """A webhook URL as shown to agents and in logs: scheme and host only (paths and queries
    often carry tokens). E-mail addresses are shown whole."""
    if kind != NotificationKind.WEBHOOK:
        return target
    parts = urlsplit(target)
    rest = "/…" if (parts.path not in ("", "/") or parts.query) else ""
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{rest}"


def backoff_s(settings: Settings, attempt: int) -> float:
    """Wait after failed attempt number `attempt` (1-based): base * 2^(attempt-1), capped, minus up
    to 20% jitter so replicas that failed together do not retry together."""
    delay = min(settings.notify_backoff_max_s, settings.notify_backoff_s * (2 ** (attempt - 1)))
    return delay * random.uniform(0.8, 1.0)


def target_key(job: Job) -> str:
    """What one slow receiver slows down: a webhook's scheme, host and port, or the SMTP server."""
    if job.kind != NotificationKind.WEBHOOK:
        return job.kind
    parts = urlsplit(job.target)
    return f"{parts.scheme}://{parts.hostname or ''}:{parts.port or ''}"


class _RedactURLs(logging.Filter):
    """httpx logs every request's full URL at INFO; webhook URLs carry tokens in their paths and
    query strings. This shows scheme and host only (httpcore's debug lines name no path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(
                redact_target(NotificationKind.WEBHOOK, str(a)) if isinstance(a, httpx.URL) else a for a in record.args
            )
        return True


def _redact_httpx_log() -> None:
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactURLs) for f in httpx_log.filters):
        httpx_log.addFilter(_RedactURLs())


class Deliverer:
    """Each claimed notification is sent on a task of its own and recorded when it ends, at most
    settings.notify_per_target at once per target and settings.notify_concurrency in all: a
    receiver that hangs holds up only its own notifications (each attempt is cut after
    webhook_timeout_s), while the loop keeps claiming and sending the others."""

    def __init__(self, *, settings: Settings, sessions: sessionmaker[Session], metrics: ServiceMetrics) -> None:
        self.settings, self.sessions, self.metrics = settings, sessions, metrics
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: httpx.AsyncClient | None = None
        self._inflight: dict[int, Job] = {}  # claimed, outcome not recorded yet
        self._sending: set[asyncio.Task] = set()
        self._busy: dict[str, int] = {}  # target_key -> notifications being sent to it
        _redact_httpx_log()

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="triage-notify")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        sending = list(self._sending)
        for task in sending:
            task.cancel()
        await asyncio.gather(*sending, return_exceptions=True)
        if self._inflight:  # stopped mid-send (a deploy): hand them back now rather than after the lease
            jobs, self._inflight = list(self._inflight.values()), {}
            try:
                await run_in_threadpool(self._release, jobs)
            except Exception as exc:
                log.warning(
                    "could not release %d claimed notification(s) (claimable again after the lease): %s",
                    len(jobs),
                    type(exc).__name__,
                )
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def kick(self) -> None:
        """Look for due notifications now (callable from any thread)."""
        if self._loop is not None and self._wake is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            claimed, asked = 0, 0
            try:
                claimed, asked = await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database down, ...: keep the loop alive, try again later
                log.warning("delivering notifications failed: %s: %s", type(exc).__name__, str(exc)[:200])
            if asked and claimed >= asked and len(self._sending) < self.settings.notify_concurrency:
                continue  # a full claim and room for more: more may be due
            try:  # woken by a new notification, or by a send that ended (room again)
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.notify_poll_s)
            except asyncio.TimeoutError:
                pass

    # -- one round -----------------------------------------------------------------------------
    async def deliver_due(self) -> tuple[int, int]:
        """Claim due notifications (as many as there is room for, up to a batch) and start
        sending each; those whose target is at its limit are handed back for a little later.
        Returns (claimed, asked for)."""
        room = min(self.settings.notify_batch_size, self.settings.notify_concurrency - len(self._sending))
        if room <= 0:
            return 0, 0
        jobs = await run_in_threadpool(self._claim, room)
        busy = []
        for job in jobs:
            key = target_key(job)
            if self._busy.get(key, 0) >= self.settings.notify_per_target:
                busy.append(job)
                continue
            self._busy[key] = self._busy.get(key, 0) + 1
            self._inflight[job.id] = job
            task = asyncio.create_task(self._deliver(job, key), name=f"triage-notify-{job.id}")
            self._sending.add(task)
        if busy:
            await run_in_threadpool(self._unclaim, busy)
        return len(jobs), room

    async def _deliver(self, job: Job, key: str) -> None:
        try:
            outcome = await self._attempt(job)
            await run_in_threadpool(self._record, [outcome])
            self._inflight.pop(job.id, None)
        except Exception as exc:  # the outcome could not be recorded: the lease hands it out again
            self._inflight.pop(job.id, None)
            log.warning("notification %d: recording the outcome failed: %s", job.id, type(exc).__name__)
        finally:
            self._busy[key] -= 1
            if not self._busy[key]:
                del self._busy[key]
            self._sending.discard(asyncio.current_task())
            if self._wake is not None:
                self._wake.set()

    def _unclaim(self, jobs: list[Job]) -> None:
        # Soon, not at once: by then a slot of the busy target has ended (or timed out).
        retry_at = utcnow() + timedelta(seconds=max(1.0, self.settings.notify_poll_s))
        with self.sessions() as session, session.begin():
            for job in jobs:
                crud.unclaim_notification(session, notification_id=job.id, attempt=job.attempt, retry_at=retry_at)

    def _release(self, jobs: list[Job]) -> None:
        with self.sessions() as session, session.begin():
            for job in jobs:
                crud.finish_notification(
                    session,
                    notification_id=job.id,
                    attempt=job.attempt,
                    status=NotificationStatus.PENDING,
                    error="interrupted: the service stopped during this attempt",
                    retry_at=utcnow(),
                )

    def _claim(self, limit: int) -> list[Job]:
        s = self.settings
        with self.sessions() as session, session.begin():
            rows = crud.claim_notifications(
                session, limit=limit, lease_s=s.notify_lease_s, max_attempts=s.notify_max_attempts
            )
            return [
                Job(r.id, r.ticket_id, r.kind, r.target, r.event, r.queue, r.attempts, dict(r.payload or {}))
                for r in rows
            ]

    def _record(self, outcomes: list[Outcome]) -> None:
        s = self.settings
        now = utcnow()
        with self.sessions() as session, session.begin():
            for o in outcomes:
                status, retry_at = o.status, None
                if status == "retry":
                    if o.job.attempt >= s.notify_max_attempts:
                        status = NotificationStatus.FAILED
                    else:
                        status, retry_at = (
                            NotificationStatus.PENDING,
                            now + timedelta(seconds=backoff_s(s, o.job.attempt)),
                        )
                held = crud.finish_notification(
                    session,
                    notification_id=o.job.id,
                    attempt=o.job.attempt,
                    status=status,
                    error=o.error,
                    retry_at=retry_at,
                )
                if not held:
                    log.warning(
                        "notification %d: claim lost before its outcome was recorded (lease %ss too short?)",
                        o.job.id,
                        s.notify_lease_s,
                    )
                    continue
                self._note(o.job, status, o.error, retry_at)

    def _note(self, job: Job, status: str, error: str | None, retry_at: datetime | None) -> None:
        outcome = {NotificationStatus.PENDING: "retried"}.get(status, status)
        self.metrics.notifications.labels(job.kind, outcome).inc()
        where = f"notification {job.id} ({job.kind}, ticket {job.ticket_id}, queue {job.queue}, attempt {job.attempt})"
        if status == NotificationStatus.SENT:
            log.info("%s sent", where)
        elif status == NotificationStatus.PENDING:
            log.info(
                "%s failed, retrying at %s: %s",
                where,
                retry_at.isoformat(timespec="seconds") if retry_at else "?",
                error,
            )
        elif status == NotificationStatus.SKIPPED:
            log.info("%s skipped: %s", where, error)
        else:
            log.warning("%s failed for good: %s", where, error)

    # -- sending -------------------------------------------------------------------------------
    def message(self, job: Job) -> dict[str, Any]:
        """The JSON document a webhook receives (and the facts an e-mail states)."""
        p = job.payload
        base = self.settings.base_url
        if job.event == "drift":
            return drift_message(job, base)
        return {
            "notification_id": job.id,
            "event": job.event,
            "ticket_id": job.ticket_id,
            "category": p.get("category"),
            "confidence": p.get("confidence"),
            "queue": job.queue,
            "previous_queue": p.get("previous_queue"),
            "status": p.get("status"),
            "subject": p.get("subject", ""),
            "channel": p.get("channel"),
            "created_at": p.get("created_at"),
            "link": f"{base}/?queue={quote(job.queue)}",
            "api_url": f"{base}/v1/tickets/{job.ticket_id}",
            "sent_at": utcnow().isoformat(),
        }

    async def _attempt(self, job: Job) -> Outcome:
        try:
            if job.kind == NotificationKind.WEBHOOK:
                # The whole attempt, not each read: a receiver trickling bytes is cut off too.
                await asyncio.wait_for(self._post(job), timeout=self.settings.webhook_timeout_s)
            elif job.kind == NotificationKind.EMAIL:
                if not self.settings.smtp_host:
                    return Outcome(job, NotificationStatus.SKIPPED, NO_SMTP.replace("{id}", str(job.id)))
                await asyncio.to_thread(self._send_email, job)
            else:
                return Outcome(job, NotificationStatus.FAILED, f"unknown notification kind {job.kind!r}")
        except PermanentError as exc:
            return Outcome(job, NotificationStatus.FAILED, str(exc)[:1000])
        except Exception as exc:
            return Outcome(job, "retry", _describe(exc))
        return Outcome(job, NotificationStatus.SENT)

    async def _post(self, job: Job) -> None:
        if self._http is None:  # made at the first webhook (an SSL context costs ~0.1 s of CPU)
            self._http = httpx.AsyncClient(
                timeout=self.settings.webhook_timeout_s,
                follow_redirects=False,
                headers={"User-Agent": f"ticket-triage/{__version__}"},
            )
        body = json.dumps(self.message(job), separators=(",", ":")).encode("utf-8")
        headers = {"Content-Type": "application/json", "X-Triage-Event": job.event, "X-Triage-Delivery": str(job.id)}
        if self.settings.webhook_secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.settings.webhook_secret.get_secret_value(), body)
        response = await self._http.post(job.target, content=body, headers=headers)
        if 200 <= response.status_code < 300:
            return
        detail = f"HTTP {response.status_code} {response.reason_phrase}".strip()
        text = response.text.strip()[:200] if response.content else ""
        if text:
            detail += f": {text}"
        if 400 <= response.status_code < 500 and response.status_code not in _RETRYABLE_HTTP:
            raise PermanentError(f"{detail} (a client error: not retried; check the webhook)")
        raise RuntimeError(detail)

    def email(self, job: Job) -> EmailMessage:
        if job.event == "drift":
            return drift_email(job, self.message(job), self.settings.smtp_from)
        m = self.message(job)
        conf = f" ({m['confidence']:.0%})" if isinstance(m["confidence"], (int, float)) else ""
        what = {"created": "new ticket", "rerouted": "ticket re-routed", "classified": "ticket classified"}.get(
            job.event, job.event
        )
        msg = EmailMessage()
        msg["From"] = self.settings.smtp_from
        msg["To"] = job.target
        msg["Subject"] = (
            f"[ticket-triage] {what} #{job.ticket_id} in {job.queue}: {m['category'] or 'unclassified'}{conf}"
        )
        msg["Message-ID"] = make_msgid(domain=self.settings.smtp_from.rpartition("@")[2] or None)
        msg["X-Triage-Delivery"] = str(job.id)
        msg["X-Triage-Event"] = job.event
        lines = [
            f"Ticket #{job.ticket_id} is in the queue {job.queue} ({what}).",
            "",
            f"Subject:    {m['subject'] or '(none)'}",
            f"Category:   {m['category'] or '(unclassified)'}{conf}",
            f"Status:     {m['status']}",
            f"Channel:    {m['channel']}",
        ]
        if m["previous_queue"]:
            lines.append(f"Moved from: {m['previous_queue']}")
        lines += ["", f"Open the queue: {m['link']}", f"API:            {m['api_url']}", "", "-- ticket-triage"]
        msg.set_content("\n".join(lines) + "\n")
        return msg

    def _send_email(self, job: Job) -> None:
        s = self.settings
        msg = self.email(job)
        context = ssl.create_default_context()
        smtp_cls = smtplib.SMTP_SSL if s.smtp_security == "ssl" else smtplib.SMTP
        kwargs: dict[str, Any] = {"context": context} if s.smtp_security == "ssl" else {}
        try:
            with smtp_cls(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s, **kwargs) as smtp:
                if s.smtp_security == "starttls":
                    smtp.starttls(context=context)
                if s.smtp_username:
                    smtp.login(s.smtp_username, s.smtp_password.get_secret_value() if s.smtp_password else "")
                smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if codes and all(code >= 500 for code in codes):
                raise PermanentError(f"SMTP refused the recipient {job.target}: {_smtp_text(exc.recipients)}") from None
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise RuntimeError(f"SMTP login failed ({exc.smtp_code})") from None  # no server text: it may echo the user
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code >= 500:
                raise PermanentError(f"SMTP {exc.smtp_code}: {_decode(exc.smtp_error)}") from None
            raise


def _decode(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _smtp_text(recipients: dict) -> str:
    return "; ".join(f"{code} {_decode(msg)}" for code, msg in recipients.values())[:500]


def _describe(exc: BaseException) -> str:
    """One line about a failed attempt, without the target URL (httpx puts it in some messages)."""
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: {str(exc).split(' for url ')[0]}"[:1000]
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"SMTP {exc.smtp_code}: {_decode(exc.smtp_error)}"[:1000]
    return f"{type(exc).__name__}: {exc}"[:1000]


# -- drift alarms (service/drift.py): a notification about no ticket ----------------------------------
def drift_message(job: Job, base: str) -> dict[str, Any]:
    """The webhook document of a drift alarm: the alarm row, and where to look."""
    return {
        "notification_id": job.id,
        "event": "drift",
        "alarm": dict(job.payload.get("alarm") or {}),
        "link": f"{base}/monitoring",
        "api_url": f"{base}/v1/stats",
        "sent_at": utcnow().isoformat(),
    }


def drift_email(job: Job, m: dict[str, Any], sender: str) -> EmailMessage:
    a = m["alarm"]
    metric = {"category_mix": "category mix", "confidence": "confidence distribution"}.get(
        a.get("metric"), a.get("metric")
    )
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = job.target
    msg["Subject"] = (
        f"[ticket-triage] drift: the {metric} moved (PSI {a.get('value', 0):.2f} > {a.get('threshold', 0):.2f})"
    )
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    msg["X-Triage-Delivery"] = str(job.id)
    msg["X-Triage-Event"] = job.event
    lines = [
        f"The {metric} of the {a.get('window')} from {str(a.get('window_start'))[:10]} moved away from the reference.",
        "",
        f"PSI:        {a.get('value', 0):.3f} (threshold {a.get('threshold', 0):.3f})",
        f"Tickets:    {a.get('tickets')}",
        f"Reference:  {a.get('reference')}",
        f"Model:      {a.get('model_version')}",
    ]
    if a.get("p_value") is not None:
        lines.append(f"Chi-square: p = {a['p_value']:.3g}")
    lines += ["", f"Monitoring: {m['link']}", f"API:        {m['api_url']}", "", "-- ticket-triage"]
    msg.set_content("\n".join(lines) + "\n")
    return msg
