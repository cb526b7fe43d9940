"""What `GET /v1/stats` and the Monitoring page show, per UTC day or ISO week: tickets, the
model's category mix, its confidence distribution and review rate, the agents' correction rate
per category and most frequent corrections, the input length distribution, and per-agent counts.

Counting is done by the database (GROUP BY over a period key that both SQLite and PostgreSQL
can compute); only the text lengths come back row by row, for exact percentiles (SQLite has no
percentile function). A period belongs to a ticket by its creation time, and to a feedback row
(corrections, confirmations) by the time the agent gave it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
from sqlalchemy import case, func, literal, literal_column, select
from sqlalchemy.orm import Session

from ..errors import ConfigError
from .drift import CONFIDENCE_BINS, CONFIDENCE_EDGES, confidence_bin, window_length, window_start
from .models import Feedback, FeedbackKind, Ticket
from .routing import RoutingRules

PERIODS = ("day", "week")
MAX_PERIODS = 400  # a year of days, or nearly eight years of weeks, in one answer
DEFAULT_SPAN = {"day": 30, "week": 12}  # periods shown when `from` is not given
LENGTH_EDGES = [0, 100, 250, 500, 1000, 2000, 4000, 8000, 16000]  # characters; the last bin is open
PERCENTILES = (10, 50, 90, 99)
TOP_CORRECTIONS = 20


# -- SQL pieces --------------------------------------------------------------------------------------
def period_key(session: Session, column, period: str):
    """SQL: the 'YYYY-MM-DD' of the UTC day, or of the ISO week's Monday, that `column` falls in."""
    if session.get_bind().dialect.name == "postgresql":
        # Literals, not bound parameters: PostgreSQL must see the GROUP BY expression as the
        # selected one (`period` is one of PERIODS, checked by stats_range).
        unit, utc, fmt = (literal_column(f"'{v}'") for v in (period, "UTC", "YYYY-MM-DD"))
        return func.to_char(func.date_trunc(unit, func.timezone(utc, column)), fmt)
    if period == "week":  # the next Sunday (or the day itself), less six days: that week's Monday
        return func.date(column, "weekday 0", "-6 days")
    return func.date(column)  # SQLite stores UTC (models.UTCDateTime)


def text_length():
    """SQL: the characters the classifier read (Ticket.text: subject, a blank line, body)."""
    subject = func.coalesce(Ticket.subject, "")
    return func.length(Ticket.body) + case((subject != "", func.length(subject) + 2), else_=0)


def _bucket(column, edges: list[float]):
    whens = [(column < edges[i + 1], i) for i in range(len(edges) - 1)]
    return case(*whens, else_=len(edges) - 1)


def review_threshold(rules: RoutingRules):
    """SQL: the confidence the predicted category needed to be routed (above 1 for a category the
    rules do not know: such a ticket always went to review)."""
    whens = [(Ticket.predicted_category == c, r.threshold) for c, r in rules.routes.items()]
    return case(*whens, else_=2.0) if whens else literal(2.0)


def feedback_kinds():
    """(correction, confirmation) conditions on feedback rows (rows from before migration 0005
    have no kind: they were all corrections)."""
    kind = Feedback.kind
    return (kind.is_(None)) | (kind != FeedbackKind.CONFIRMATION), kind == FeedbackKind.CONFIRMATION


# -- the range -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StatsRange:
    period: str
    start: datetime  # the first period's start
    end: datetime  # exclusive
    starts: list[datetime]
    notes: tuple[str, ...] = ()  # what was changed in the range asked for, in words

    @property
    def keys(self) -> list[str]:
        return [s.date().isoformat() for s in self.starts]  # strftime writes the year 1 as "1"


FIRST_MONDAY = datetime(1, 1, 1, tzinfo=timezone.utc)  # 1 January of the year 1 was a Monday


def stats_range(period: str, start: datetime | None, end: datetime | None, now: datetime) -> StatsRange:
    """The periods from `start` (aligned down to its period; default: DEFAULT_SPAN periods back)
    to `end` (default now). A range past MAX_PERIODS keeps its latest ones, one past the year
    9999 stops before it, and an empty one has no period: each change is said in `notes`.
    ConfigError only for an unknown period."""
    if period not in PERIODS:
        raise ConfigError(f"period must be day or week, got {period!r}")
    step, notes = window_length(period), []
    end = end or now
    try:
        first = window_start(start, period) if start else window_start(end, period) - step * (DEFAULT_SPAN[period] - 1)
    except OverflowError:  # the default span reaches before the year 1
        first = FIRST_MONDAY
    if end <= first:
        notes.append("`to` is not after `from`: no period to show")
        return StatsRange(period, first, first, [], tuple(notes))
    count = -(-(end - first) // step)  # ceiling
    if count > MAX_PERIODS:
        first = first + step * (count - MAX_PERIODS)
        notes.append(
            f"the range held {count} {period}s; only the latest {MAX_PERIODS} are shown (at most {MAX_PERIODS} at a "
            "time)" + (": ask for period=week for a longer view" if period == "day" else "")
        )
        count = MAX_PERIODS
    while count:
        try:
            first + step * count  # the last period's end must exist too
            break
        except OverflowError:
            count -= 1
            end = first + step * count
            notes.append("periods past the year 9999 are left out")
    return StatsRange(period, first, end, [first + step * i for i in range(count)], tuple(notes))


# -- the numbers ----------------------------------------------------------------------------------------
def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _lengths_summary(lengths: list[int]) -> dict[str, Any]:
    counts = [0] * len(LENGTH_EDGES)
    if lengths:
        idx = np.searchsorted(np.asarray(LENGTH_EDGES[1:]), np.asarray(lengths), side="right")
        for i, n in zip(*np.unique(idx, return_counts=True)):
            counts[int(i)] = int(n)
    pct = np.percentile(lengths, PERCENTILES).tolist() if lengths else [None] * len(PERCENTILES)
    return {
        "percentiles": {f"p{p}": (round(v, 1) if v is not None else None) for p, v in zip(PERCENTILES, pct)},
        "mean": round(float(np.mean(lengths)), 1) if lengths else None,
        "histogram": {"edges": LENGTH_EDGES, "counts": counts},
    }


def _empty_period(key: str, start: datetime, end: datetime, labels: list[str]) -> dict[str, Any]:
    return {
        "period": key,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "tickets": 0,
        "classified": 0,
        "unclassified": 0,
        "categories": {label: {"count": 0, "share": None} for label in labels},
        "confidence": {"edges": CONFIDENCE_EDGES, "counts": [0] * CONFIDENCE_BINS},
        "review": {"count": 0, "rate": None},
        "corrections": {"tickets": 0, "rate": None, "per_category": {}},
        "feedback": {"corrections": 0, "confirmations": 0},
        "length": None,
    }


def _ticket_counts(session: Session, key, where, rules: RoutingRules, out: dict[str, dict]) -> None:
    classified = Ticket.predicted_category.is_not(None)
    for k, n, n_classified, n_review in session.execute(
        select(
            key,
            func.count(),
            func.count(Ticket.predicted_category),
            func.sum(case((classified & (Ticket.confidence < review_threshold(rules)), 1), else_=0)),
        )
        .where(*where)
        .group_by(key)
    ):
        if k in out:
            p = out[k]
            p["tickets"], p["classified"] = int(n), int(n_classified)
            p["unclassified"] = int(n) - int(n_classified)
            p["review"] = {"count": int(n_review or 0), "rate": _rate(int(n_review or 0), int(n_classified))}
    for k, category, n in session.execute(
        select(key, Ticket.predicted_category, func.count())
        .where(*where, classified)
        .group_by(key, Ticket.predicted_category)
    ):
        if k in out:
            out[k]["categories"].setdefault(str(category), {})["count"] = int(n)
    bin_ = confidence_bin(Ticket.confidence)
    for k, b, n in session.execute(
        select(key, bin_, func.count()).where(*where, Ticket.confidence.is_not(None)).group_by(key, bin_)
    ):
        if k in out:
            out[k]["confidence"]["counts"][int(b)] = int(n)


def _correction_counts(session: Session, key, where, out: dict[str, dict]) -> None:
    """Tickets (by creation period and predicted category) that an agent corrected at least once."""
    correction, _ = feedback_kinds()
    corrected = (
        select(Feedback.ticket_id).where(correction).distinct().subquery()  # one row per corrected ticket
    )
    for k, category, n in session.execute(
        select(key, Ticket.predicted_category, func.count())
        .join(corrected, corrected.c.ticket_id == Ticket.id)
        .where(*where, Ticket.predicted_category.is_not(None))
        .group_by(key, Ticket.predicted_category)
    ):
        if k in out:
            out[k]["corrections"]["per_category"][str(category)] = int(n)


def _finish_period(p: dict[str, Any]) -> None:
    for entry in p["categories"].values():
        entry.setdefault("count", 0)
        entry["share"] = _rate(entry["count"], p["classified"])
    per_category = {}
    for category, entry in p["categories"].items():
        n = p["corrections"]["per_category"].get(category, 0)
        per_category[category] = {"tickets": entry["count"], "corrected": n, "rate": _rate(n, entry["count"])}
    total = sum(v["corrected"] for v in per_category.values())
    p["corrections"] = {"tickets": total, "rate": _rate(total, p["classified"]), "per_category": per_category}


def _feedback_stats(session: Session, rng: StatsRange, out: dict[str, dict]) -> dict[str, Any]:
    """Per-agent counts (per period and in all) and the most frequent corrections, by feedback time."""
    correction, confirmation = feedback_kinds()
    key = period_key(session, Feedback.created_at, rng.period)
    where = [Feedback.created_at >= rng.start, Feedback.created_at < rng.end]
    is_confirmation = case((confirmation, 1), else_=0)
    agents: dict[str, dict[str, int]] = {}
    for k, agent, n, n_confirm in session.execute(
        select(key, Feedback.agent, func.count(), func.sum(is_confirmation)).where(*where).group_by(key, Feedback.agent)
    ):
        confirms = int(n_confirm or 0)
        totals = agents.setdefault(str(agent), {"corrections": 0, "confirmations": 0})
        totals["corrections"] += int(n) - confirms
        totals["confirmations"] += confirms
        if k in out:
            fb = out[k]["feedback"]
            fb["corrections"] += int(n) - confirms
            fb["confirmations"] += confirms
            fb.setdefault("agents", {})[str(agent)] = {"corrections": int(n) - confirms, "confirmations": confirms}
    pairs = session.execute(
        select(Feedback.previous_category, Feedback.category, func.count().label("n"))
        .where(*where, correction, Feedback.previous_category.is_distinct_from(Feedback.category))
        .group_by(Feedback.previous_category, Feedback.category)
        .order_by(func.count().desc(), Feedback.previous_category, Feedback.category)
        .limit(TOP_CORRECTIONS)
    ).all()
    return {
        "agents": [
            {"agent": name, **counts}
            for name, counts in sorted(agents.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
        ],
        "top_corrections": [{"from": a, "to": b, "count": int(n)} for a, b, n in pairs],
    }


def _totals(periods: list[dict[str, Any]], labels: list[str], lengths: list[int]) -> dict[str, Any]:
    t = _empty_period("all", datetime.min, datetime.min, labels)
    for key in ("period", "start", "end"):
        t.pop(key)
    for p in periods:
        for field in ("tickets", "classified", "unclassified"):
            t[field] += p[field]
        t["review"]["count"] += p["review"]["count"]
        for category, entry in p["categories"].items():
            t["categories"].setdefault(category, {"count": 0})["count"] += entry["count"]
            t["corrections"]["per_category"][category] = (
                t["corrections"]["per_category"].get(category, 0)
                + p["corrections"]["per_category"][category]["corrected"]
            )
        t["confidence"]["counts"] = [a + b for a, b in zip(t["confidence"]["counts"], p["confidence"]["counts"])]
        for field in ("corrections", "confirmations"):
            t["feedback"][field] += p["feedback"][field]
    t["review"]["rate"] = _rate(t["review"]["count"], t["classified"])
    _finish_period(t)
    t["length"] = _lengths_summary(lengths)
    return t


def compute_stats(
    session: Session, rules: RoutingRules, rng: StatsRange, *, labels: list[str] | None = None
) -> dict[str, Any]:
    """Every number of the Monitoring page for the periods of `rng` (drift is added by the caller)."""
    labels = list(labels or rules.routes)
    step = window_length(rng.period)
    out = {k: _empty_period(k, s, s + step, labels) for k, s in zip(rng.keys, rng.starts)}
    key = period_key(session, Ticket.created_at, rng.period)
    where = [Ticket.created_at >= rng.start, Ticket.created_at < rng.end]
    _ticket_counts(session, key, where, rules, out)
    _correction_counts(session, key, where, out)
    lengths: dict[str, list[int]] = {k: [] for k in out}
    for k, n in session.execute(select(key, text_length()).where(*where)):
        if k in lengths:
            lengths[k].append(int(n))
    for k, p in out.items():
        _finish_period(p)
        p["length"] = _lengths_summary(lengths[k])
    feedback = _feedback_stats(session, rng, out)
    periods = list(out.values())
    return {
        "period": rng.period,
        "from": rng.start.isoformat(),
        "to": rng.end.isoformat(),
        "labels": labels,
        "notes": list(rng.notes),
        "periods": periods,
        "totals": _totals(periods, labels, [n for v in lengths.values() for n in v]),
        **feedback,
    }
