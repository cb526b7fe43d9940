"""`GET /v1/stats` (agents) and the console's Monitoring page at `/monitoring`: per day or week,
the category mix, confidence and review rate, corrections, input lengths, per-agent counts, and
the drift values and alarms (service/stats.py, service/drift.py). The page draws its charts as
inline SVG on the server (service/charts.py): no script at all."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from ...errors import ConfigError
from .. import charts
from ..deps import AgentDep, SessionDep, StateDep
from ..drift import CONFIDENCE_EDGES, alarm_public, drift_report, recent_alarms
from ..models import utcnow
from ..schemas import UTCDateTime
from ..state import ServiceState
from ..stats import LENGTH_EDGES, compute_stats, stats_range
from ._limits import AUTH, DATABASE, GuardedRoute
from .admin import shadow_report
from .console import _console_principal

router = APIRouter(tags=["monitoring"], route_class=GuardedRoute)

Period = Annotated[Literal["day", "week"], Query(description="UTC days or ISO weeks (Monday to Sunday)")]
From = Annotated[
    UTCDateTime | None,
    Query(alias="from", description="first period (aligned down to its start); default: 30 days or 12 weeks back"),
]
To = Annotated[UTCDateTime | None, Query(description="end of the range (exclusive); default: now")]


def build_stats(session: Session, state: ServiceState, period: str, start: datetime | None, end: datetime | None):
    now = utcnow()
    try:
        rng = stats_range(period, start, end, now)
    except ConfigError as exc:  # the API's Literal makes this the page's case only
        raise HTTPException(422, [{"loc": ["query", "period"], "msg": str(exc), "type": "value_error"}]) from None
    out = compute_stats(session, state.rules, rng, labels=state.labels)
    reference = getattr(state.drift, "reference", None)
    out["drift"] = drift_report(
        session, state.rules, now, model_version=state.model_version, reference=reference
    ).to_dict()
    out["alarms"] = [alarm_public(a) for a in recent_alarms(session)]
    return out


@router.get("/v1/stats", responses={**AUTH, **DATABASE})
def get_stats(
    session: SessionDep, state: StateDep, _: AgentDep, period: Period = "day", from_: From = None, to: To = None
) -> dict[str, Any]:
    """Per period (`period=day|week`, from `from` to `to`, at most the latest 400; `notes`
    says when the range was cut): `tickets`, the model's `categories`
    (count and share of classified tickets), the `confidence` histogram (10 bins of 0.1) and the
    `review` rate (below the category's threshold), agents' `corrections` (tickets corrected at
    least once, by predicted category), the input `length` (characters: percentiles, histogram)
    and `feedback` per agent. Over the whole range: `totals`, `top_corrections` (from -> to,
    most frequent first), `agents` (corrections and confirmations). And `drift` (the PSI of the
    category mix and of the confidence against the active model's reference, for the previous
    and the current window) with the recent drift `alarms`."""
    return build_stats(session, state, period, from_, to)


def _charts(stats: dict[str, Any]) -> dict[str, Any]:
    periods, labels = stats["periods"], stats["labels"]
    keys = [p["period"] for p in periods]
    totals = stats["totals"]
    shown = labels + sorted(c for c in totals["categories"] if c not in labels)
    per = "day" if stats["period"] == "day" else "week"
    return {
        "legend": charts.legend(shown),
        "mix": charts.stacked_bars(
            "Category mix",
            f"The model's predicted categories as shares of each {per}'s classified tickets, stacked.",
            keys,
            {c: [p["categories"].get(c, {}).get("share") for p in periods] for c in shown},
            totals=[p["classified"] for p in periods],
        ),
        "confidence": charts.bars(
            "Confidence distribution",
            "Tickets by the model's confidence in its category, in bins of 0.1, over the whole range.",
            [f"{CONFIDENCE_EDGES[i]:.1f}" for i in range(len(CONFIDENCE_EDGES) - 1)],
            totals["confidence"]["counts"],
        ),
        "rates": charts.lines(
            "Review and correction rates",
            f"Per {per}: the share of classified tickets sent to review (below their category's threshold), "
            "and the share that agents corrected.",
            keys,
            {
                "review rate": [p["review"]["rate"] for p in periods],
                "correction rate": [p["corrections"]["rate"] for p in periods],
            },
            y_max=1.0,
        ),
        "length": charts.lines(
            "Input length",
            f"Per {per}: the median and the 90th percentile of the ticket text's length in characters.",
            keys,
            {
                "median": [p["length"]["percentiles"]["p50"] for p in periods],
                "90th percentile": [p["length"]["percentiles"]["p90"] for p in periods],
            },
            fmt=charts.number,
        ),
        "length_hist": charts.bars(
            "Input length distribution",
            "Tickets by text length in characters, over the whole range.",
            [f"{e:,}+" if i == len(LENGTH_EDGES) - 1 else f"{e:,}" for i, e in enumerate(LENGTH_EDGES)],
            totals["length"]["histogram"]["counts"],
        ),
        "rate_legend": charts.legend(["review rate", "correction rate"]),
        "length_legend": charts.legend(["median", "90th percentile"]),
    }


PageDate = Annotated[str | None, Query(max_length=40, description="a date (YYYY-MM-DD) or ISO date-time, UTC")]


def _page_date(value: str | None, name: str) -> datetime | None:
    """The page's date fields: empty is unset; a bad one is a message on the page, not a 422."""
    if not value or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(f"`{name}` must be a date like 2026-03-01, got {value[:40]!r}") from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


@router.get("/monitoring", response_class=HTMLResponse, include_in_schema=False)
def monitoring(
    request: Request,
    session: SessionDep,
    state: StateDep,
    period: Annotated[str, Query(max_length=10)] = "day",
    from_: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    to: PageDate = None,
):
    """The Monitoring page, behind the console's sign-in (an unsigned visitor is sent to it).
    A bad range shows its reason above the default range's numbers."""
    principal = _console_principal(request, state)
    if principal is None:
        return RedirectResponse("/", status_code=status.HTTP_303_SEE_OTHER)
    error = None
    try:
        stats = build_stats(session, state, period, _page_date(from_, "from"), _page_date(to, "to"))
    except (ConfigError, HTTPException) as exc:
        error = exc.detail[0]["msg"] if isinstance(exc, HTTPException) else str(exc)
        stats = build_stats(session, state, "day", None, None)
    return request.app.state.templates.TemplateResponse(
        request,
        "monitoring.html",
        {
            "stats": stats,
            "charts": _charts(stats),
            "shadow": shadow_report(state),
            "error": error,
            "principal": principal,
            "auth": state.settings.auth,
            "model_version": state.model_version,
        },
        status_code=422 if error else 200,
    )
