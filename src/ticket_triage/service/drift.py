"""Drift alarms: is the live traffic still like what the active model saw when it started?

The reference is the first `reference_days` of tickets the active model version classified
(or, when the model folder holds `drift_reference.json`, the distributions of its validation
predictions). Each window (a UTC day or ISO week, from the routing YAML's `drift:` section)
is compared with it on two distributions:

- the category mix (the model's predicted category): PSI, plus a chi-square p-value;
- the confidence distribution, in 10 bins of 0.1: PSI.

PSI, the population-stability index, is sum((a - e) * ln(a / e)) over the bins' shares;
< 0.1 is read as stable, 0.1-0.2 as moving, > 0.2 as shifted. We compute it here (a few
lines) rather than through Evidently: see the README's "Monitoring and drift".

`check_drift(session, rules, now)` judges the current and the previous window and adds a
`DriftAlarm` row (and its outbox notifications, event "drift") for each metric over the
threshold, at most one per metric and window. `DriftChecker` runs it in the background.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from ..errors import ConfigError
from .crud import outbox_rows
from .models import DriftAlarm, Notification, Ticket, utcnow
from .routing import DriftRules, RoutingRules
from .tasks import cancel_and_wait

log = logging.getLogger("ticket_triage.service.drift")

METRICS = ("category_mix", "confidence")
CONFIDENCE_BINS = 10
CONFIDENCE_EDGES = [i / CONFIDENCE_BINS for i in range(CONFIDENCE_BINS + 1)]
REFERENCE_FILE = "drift_reference.json"
DRIFT_QUEUE = "drift"  # what an alarm's notification names as its queue (it has no ticket)
PSI_EPSILON = 1e-4  # a share of 0 would make ln(a/e) infinite: empty bins count as this share


# -- the statistics ---------------------------------------------------------------------------------
def _shares(counts: Sequence[float], eps: float) -> list[float]:
    total = float(sum(counts))
    if total <= 0:
        return [1.0 / len(counts)] * len(counts)
    return [max(c / total, eps) for c in counts]


def psi(expected: Sequence[float], actual: Sequence[float], eps: float = PSI_EPSILON) -> float:
    """Population-stability index of `actual` against `expected`, two counts (or shares) over the
    same bins: sum((a - e) * ln(a / e)) over the shares, empty bins floored at `eps`. 0 for the
    same distribution; symmetric in its arguments."""
    if len(expected) != len(actual) or not expected:
        raise ValueError(f"psi needs two distributions over the same bins, got {len(expected)} and {len(actual)}")
    e, a = _shares(expected, eps), _shares(actual, eps)
    return float(sum((ai - ei) * math.log(ai / ei) for ei, ai in zip(e, a)))


def chi_square_p(expected: Sequence[int], actual: Sequence[int]) -> float | None:
    """p-value of a chi-square test that the two count vectors come from one distribution (a 2 x K
    contingency table); None when it cannot be computed (fewer than two non-empty bins, no scipy)."""
    try:
        from scipy.stats import chi2_contingency
    except ImportError:  # pragma: no cover - scipy is a core dependency
        return None
    columns = [(e, a) for e, a in zip(expected, actual) if e + a > 0]
    if len(columns) < 2 or not sum(e for e, _ in columns) or not sum(a for _, a in columns):
        return None
    table = [[e for e, _ in columns], [a for _, a in columns]]
    return float(chi2_contingency(table).pvalue)


def confidence_bin(column):
    """SQL: the confidence bin (0..9) of `column`, portable (SQLite has no floor(), and CAST
    rounds on PostgreSQL but truncates on SQLite)."""
    whens = [(column < CONFIDENCE_EDGES[i + 1], i) for i in range(CONFIDENCE_BINS - 1)]
    return case(*whens, else_=CONFIDENCE_BINS - 1)


# -- windows ----------------------------------------------------------------------------------------
def window_start(moment: datetime, window: str) -> datetime:
    """The UTC midnight that starts `moment`'s day, or its ISO week's Monday."""
    day = moment.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday()) if window == "week" else day


def window_length(window: str) -> timedelta:
    return timedelta(days=7 if window == "week" else 1)


# -- distributions ----------------------------------------------------------------------------------
@dataclass
class Distribution:
    """The model's predicted categories and binned confidences over some tickets."""

    tickets: int = 0
    categories: dict[str, int] = field(default_factory=dict)
    confidence: list[int] = field(default_factory=lambda: [0] * CONFIDENCE_BINS)

    def category_counts(self, labels: Sequence[str]) -> list[int]:
        return [self.categories.get(label, 0) for label in labels]

    def to_dict(self) -> dict[str, Any]:
        return {"tickets": self.tickets, "categories": dict(self.categories), "confidence": list(self.confidence)}


def distribution(session: Session, *, start: datetime | None, end: datetime, model_version: str | None) -> Distribution:
    """Category and confidence-bin counts of the tickets `model_version` classified in [start, end)."""
    conditions = [Ticket.predicted_category.is_not(None), Ticket.confidence.is_not(None), Ticket.created_at < end]
    if start is not None:
        conditions.append(Ticket.created_at >= start)
    if model_version is not None:
        conditions.append(Ticket.model_version == model_version)
    out = Distribution()
    for category, n in session.execute(
        select(Ticket.predicted_category, func.count()).where(*conditions).group_by(Ticket.predicted_category)
    ):
        out.categories[str(category)] = int(n)
        out.tickets += int(n)
    bin_ = confidence_bin(Ticket.confidence)
    for b, n in session.execute(select(bin_, func.count()).where(*conditions).group_by(bin_)):
        out.confidence[int(b)] = int(n)
    return out


@dataclass
class Reference:
    """What a window is compared with."""

    label: str  # in words, for the alarm row and the page
    dist: Distribution
    start: datetime | None = None
    end: datetime | None = None  # windows are judged only after it (None: a saved reference, always)


def load_reference(path: str | Path) -> Reference:
    """A reference saved from the model's validation predictions: JSON with `categories` (counts by
    predicted category) and `confidence` (10 counts, bins of 0.1)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        categories = {str(k): int(v) for k, v in dict(data["categories"]).items()}
        confidence = [int(v) for v in data["confidence"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path}: not a drift reference ({exc}); it needs `categories` (counts) and `confidence` (10 counts)"
        ) from None
    if len(confidence) != CONFIDENCE_BINS:
        raise ConfigError(
            f"{path}: `confidence` must hold {CONFIDENCE_BINS} counts (bins of 0.1), got {len(confidence)}"
        )
    dist = Distribution(sum(categories.values()), categories, confidence)
    return Reference(f"validation predictions ({path.name})", dist)


def write_reference(model_dir: str | Path, predictions: Iterable[Any]) -> Path:
    """Save `predictions` (objects with `category` and `confidence`, e.g. the model's predictions
    on its validation split) as the model folder's drift reference, which then replaces the
    live reference window for that model."""
    dist = Distribution()
    for p in predictions:
        dist.categories[str(p.category)] = dist.categories.get(str(p.category), 0) + 1
        dist.confidence[bisect_right(CONFIDENCE_EDGES[1:-1], float(p.confidence))] += 1  # as confidence_bin
        dist.tickets += 1
    if not dist.tickets:
        raise ConfigError("no predictions to make a drift reference from")
    path = Path(model_dir) / REFERENCE_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"categories": dist.categories, "confidence": dist.confidence}, indent=2))
    tmp.replace(path)
    return path


def live_reference(session: Session, rules: DriftRules, model_version: str | None) -> Reference | None:
    """The first `reference_days` of tickets classified by `model_version` (None: no ticket yet)."""
    first_q = select(func.min(Ticket.created_at)).where(Ticket.predicted_category.is_not(None))
    if model_version is not None:
        first_q = first_q.where(Ticket.model_version == model_version)
    first = session.scalar(first_q)
    if first is None:
        return None
    if isinstance(first, str):  # in case a driver hands the aggregate back untyped
        first = datetime.fromisoformat(first)
    if first.tzinfo is None:
        first = first.replace(tzinfo=timezone.utc)
    start = window_start(first, "day")
    end = start + timedelta(days=rules.reference_days)
    dist = distribution(session, start=start, end=end, model_version=model_version)
    label = f"model {model_version or '(any)'}: tickets of {start:%Y-%m-%d} to {end - timedelta(days=1):%Y-%m-%d}"
    return Reference(label[:200], dist, start, end)


def latest_model_version(session: Session) -> str | None:
    return session.scalar(
        select(Ticket.model_version)
        .where(Ticket.model_version.is_not(None), Ticket.predicted_category.is_not(None))
        .order_by(Ticket.id.desc())
        .limit(1)
    )


# -- the report -------------------------------------------------------------------------------------
@dataclass
class WindowReport:
    start: datetime
    end: datetime
    status: str  # ok | drift | too-few-tickets | collecting-reference
    current: Distribution
    values: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> {psi, p_value?, alarm}

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "status": self.status,
            "tickets": self.current.tickets,
            "metrics": self.values,
        }


def judge_window(
    session: Session,
    rules: DriftRules,
    labels: Sequence[str],
    reference: Reference,
    start: datetime,
    *,
    now: datetime,
    model_version: str | None,
) -> WindowReport:
    """PSI (and the mix's chi-square p-value) of the window starting at `start`, up to `now`,
    counting only tickets after the reference."""
    end = start + window_length(rules.window)
    if reference.end is not None and now < reference.end:
        return WindowReport(start, end, "collecting-reference", Distribution())
    since = max(start, reference.end) if reference.end is not None else start
    current = distribution(session, start=since, end=min(end, now), model_version=model_version)
    report = WindowReport(start, end, "ok", current)
    if current.tickets < rules.min_tickets or reference.dist.tickets < rules.min_tickets:
        report.status = "too-few-tickets"
        return report
    names = sorted(set(labels) | set(reference.dist.categories) | set(current.categories))
    ref_mix, cur_mix = reference.dist.category_counts(names), current.category_counts(names)
    mix = psi(ref_mix, cur_mix)
    conf = psi(reference.dist.confidence, current.confidence)
    report.values = {
        "category_mix": {"psi": round(mix, 6), "p_value": chi_square_p(ref_mix, cur_mix)},
        "confidence": {"psi": round(conf, 6)},
    }
    for values in report.values.values():
        values["alarm"] = values["psi"] > rules.psi_threshold
    if any(v["alarm"] for v in report.values.values()):
        report.status = "drift"
    return report


@dataclass
class DriftReport:
    model_version: str | None
    rules: DriftRules
    reference: Reference | None
    windows: list[WindowReport]  # the previous window, then the current one
    status: str  # disabled | no-reference | the current window's status

    def to_dict(self) -> dict[str, Any]:
        ref = self.reference
        return {
            "status": self.status,
            "model_version": self.model_version,
            "window": self.rules.window,
            "psi_threshold": self.rules.psi_threshold,
            "min_tickets": self.rules.min_tickets,
            "reference": None
            if ref is None
            else {
                "label": ref.label,
                "start": ref.start.isoformat() if ref.start else None,
                "end": ref.end.isoformat() if ref.end else None,
                **ref.dist.to_dict(),
            },
            "windows": [w.to_dict() for w in self.windows],
        }


def drift_report(
    session: Session,
    rules: RoutingRules,
    now: datetime | None = None,
    *,
    model_version: str | None = None,
    reference: Reference | None = None,
) -> DriftReport:
    """The drift values of the previous and the current window for `model_version` (default: the
    version of the latest classified ticket), against `reference` (default: its first days)."""
    now = now or utcnow()
    drift = rules.drift
    model_version = model_version or latest_model_version(session)
    if not drift.enabled:
        return DriftReport(model_version, drift, None, [], "disabled")
    reference = reference or live_reference(session, drift, model_version)
    if reference is None:
        return DriftReport(model_version, drift, None, [], "no-reference")
    current = window_start(now, drift.window)
    labels = list(rules.routes)
    windows = [
        judge_window(session, drift, labels, reference, start, now=now, model_version=model_version)
        for start in (current - window_length(drift.window), current)
    ]
    return DriftReport(model_version, drift, reference, windows, windows[-1].status)


# -- alarms -------------------------------------------------------------------------------------------
def alarm_public(alarm: DriftAlarm) -> dict[str, Any]:
    return {
        "id": alarm.id,
        "at": alarm.created_at.isoformat() if alarm.created_at else None,
        "metric": alarm.metric,
        "value": alarm.value,
        "threshold": alarm.threshold,
        "window": alarm.window,
        "window_start": alarm.window_start.isoformat(),
        "window_end": alarm.window_end.isoformat(),
        "tickets": alarm.tickets,
        "reference": alarm.reference,
        "model_version": alarm.model_version,
        "p_value": alarm.p_value,
    }


def recent_alarms(session: Session, *, limit: int = 20) -> list[DriftAlarm]:
    return list(session.scalars(select(DriftAlarm).order_by(DriftAlarm.id.desc()).limit(limit)))


def _alarm_exists(session: Session, metric: str, start: datetime) -> bool:
    return (
        session.scalar(
            select(func.count())
            .select_from(DriftAlarm)
            .where(DriftAlarm.metric == metric, DriftAlarm.window_start == start)
        )
        > 0
    )


def _notifications(alarm: DriftAlarm, drift: DriftRules) -> list[Notification]:
    payload = {"alarm": alarm_public(alarm), "event": "drift"}
    return outbox_rows(drift.targets(), ticket_id=None, event="drift", queue=DRIFT_QUEUE, payload=payload)


def check_drift(
    session: Session,
    rules: RoutingRules,
    now: datetime | None = None,
    *,
    model_version: str | None = None,
    reference: Reference | None = None,
) -> list[DriftAlarm]:
    """Judge the previous and current window; add an alarm (and its notifications) per metric over
    the threshold that has none in that window yet. Returns the new alarms; the caller commits.
    Each alarm goes in a savepoint: another replica that raised the same one first wins (the
    unique index), and this one is skipped."""
    report = drift_report(session, rules, now, model_version=model_version, reference=reference)
    added: list[DriftAlarm] = []
    for window in report.windows:
        for metric, values in window.values.items():
            if not values["alarm"] or _alarm_exists(session, metric, window.start):
                continue
            assert report.reference is not None
            alarm = DriftAlarm(
                created_at=utcnow(),
                metric=metric,
                value=float(values["psi"]),
                threshold=report.rules.psi_threshold,
                window=report.rules.window,
                window_start=window.start,
                window_end=window.end,
                tickets=window.current.tickets,
                reference=report.reference.label,
                reference_start=report.reference.start,
                reference_end=report.reference.end,
                model_version=report.model_version,
                p_value=values.get("p_value"),
                details={"reference": report.reference.dist.to_dict(), "window": window.current.to_dict()},
            )
            try:
                with session.begin_nested():
                    session.add(alarm)
                    session.flush()
                    session.add_all(_notifications(alarm, report.rules))
                    session.flush()
            except IntegrityError:
                continue
            log.warning(
                "drift alarm: %s PSI %.3f > %.3f in the %s of %s (%d tickets, against %s)",
                metric,
                alarm.value,
                alarm.threshold,
                alarm.window,
                window.start.date().isoformat(),
                alarm.tickets,
                alarm.reference,
            )
            added.append(alarm)
    return added


# -- the background loop ----------------------------------------------------------------------------
class DriftChecker:
    """Runs `check_drift` every `interval_s` (off the event loop) and kicks the notification
    deliverer when it added alarms."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        rules: RoutingRules,
        model_version: Callable[[], str | None],
        interval_s: float,
        reference: Reference | None = None,
        on_notifications: Callable[[], None] = lambda: None,
    ) -> None:
        self.sessions, self.rules, self.model_version = sessions, rules, model_version
        self.interval_s, self.reference, self.on_notifications = interval_s, reference, on_notifications
        self._task: asyncio.Task | None = None

    @classmethod
    def reference_of(cls, model_dir: str | Path | None) -> Reference | None:
        """The model folder's saved reference (drift_reference.json), if it has one."""
        if model_dir is None or not (Path(model_dir) / REFERENCE_FILE).is_file():
            return None
        return load_reference(Path(model_dir) / REFERENCE_FILE)

    async def start(self) -> None:
        if self.rules.drift.enabled:
            self._task = asyncio.create_task(self._loop(), name="triage-drift")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def check_once(self) -> list[DriftAlarm]:
        with self.sessions() as session, session.begin():
            alarms = check_drift(
                session, self.rules, utcnow(), model_version=self.model_version(), reference=self.reference
            )
        if alarms and self.rules.drift.targets():
            self.on_notifications()
        return alarms

    async def _loop(self) -> None:
        while True:
            try:
                await run_in_threadpool(self.check_once)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database down, ...: keep the loop alive, try again later
                log.warning("checking for drift failed: %s: %s", type(exc).__name__, str(exc)[:200])
            await asyncio.sleep(self.interval_s)
