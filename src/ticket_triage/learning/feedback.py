"""Agents' corrections, read from the service's database or from its CSV export.

Either way the result is one frame, one row per corrected ticket, with its latest correction:
    ticket_id (str), text, label (the agent's category), corrected_at (UTC timestamp)
The database gives each correction's own time; the CSV of `GET /v1/feedback/export` has a
`Corrected at` column where the service writes one, else its `Date received` (the ticket's
creation day) stands in for it.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, DataError

COLUMNS = ["ticket_id", "text", "label", "corrected_at"]
# The export's columns (service/routes/feedback.py EXPORT_COLUMNS), plus an optional correction time.
CSV_TEXT, CSV_LABEL, CSV_ID, CSV_DATE, CSV_CORRECTED = (
    "Consumer complaint narrative",
    "Product",
    "Complaint ID",
    "Date received",
    "Corrected at",
)
# The export prefixes ' to cells a spreadsheet would run as formulas (OWASP); undone here.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def is_database_url(source: str) -> bool:
    return "://" in str(source)


def read_corrections(source: str | Path, *, labels: Sequence[str], since: date | datetime | None = None):
    """The latest correction of every corrected ticket (see the module docstring), oldest first.

    `labels`: the model's categories; a correction to any other category is an error, since the
    model could not learn it. `since`: only corrections made on or after it."""
    frame = _read_database(str(source), since) if is_database_url(str(source)) else _read_csv(Path(source), since)
    frame = frame.dropna(subset=["text", "label"])
    frame = frame[frame["text"].astype(str).str.strip() != ""]
    unknown = sorted(set(frame["label"]) - set(labels))
    if unknown:
        raise DataError(
            f"the corrections use categories the model does not know: {unknown}; the model's are {list(labels)} "
            "(retrain with --from-scratch on data prepared with the new taxonomy)"
        )
    # the latest correction of a ticket is the agent's last word on it
    frame = frame.sort_values(["corrected_at", "order"], kind="stable")
    frame = frame.drop_duplicates("ticket_id", keep="last")
    return frame[COLUMNS].reset_index(drop=True)


def _since_ts(since: date | datetime | None):
    import pandas as pd

    if since is None:
        return None
    ts = pd.Timestamp(since)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _read_database(url: str, since: date | datetime | None):
    """Corrections straight from the service's tables, through its own SQLAlchemy models."""
    import pandas as pd
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from ..service.db import make_engine
    from ..service.models import Feedback, Ticket

    stmt = select(Feedback, Ticket).join(Ticket, Ticket.id == Feedback.ticket_id).order_by(Feedback.id)
    stmt = stmt.where(Feedback.kind == "correction")  # confirmations are not new labels to learn from
    start = _since_ts(since)
    if start is not None:
        stmt = stmt.where(Feedback.created_at >= start.to_pydatetime())
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            from sqlalchemy.orm import Session

            with Session(bind=conn) as session:
                rows = [(str(t.id), t.text, fb.category, _utc(fb.created_at), fb.id) for fb, t in session.execute(stmt)]
    except SQLAlchemyError as exc:
        raise ConfigError(
            f"cannot read corrections from {engine.url.render_as_string(hide_password=True)}: {str(exc).splitlines()[0]} "
            "(give the service's --db URL, migrated with `triage db upgrade`, or the CSV of GET /v1/feedback/export)"
        ) from None
    finally:
        engine.dispose()
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "order"])
    frame["corrected_at"] = pd.to_datetime(frame["corrected_at"], utc=True)
    return frame


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _read_csv(path: Path, since: date | datetime | None):
    import pandas as pd

    if not path.is_file():
        raise DataError(
            f"feedback file {path} does not exist: give the CSV of GET /v1/feedback/export?escape_formulas=false "
            "or the service's database URL (e.g. sqlite:///triage.db)"
        )
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path} is not a readable CSV: {str(exc).splitlines()[0]}") from None
    missing = [c for c in (CSV_TEXT, CSV_LABEL) if c not in raw.columns]
    if missing:
        raise DataError(f"{path} lacks the column(s) {missing} of GET /v1/feedback/export (it has {list(raw.columns)})")
    when = raw[CSV_CORRECTED] if CSV_CORRECTED in raw.columns else raw.get(CSV_DATE, pd.Series([""] * len(raw)))
    corrected_at = pd.to_datetime(when.replace("", None), utc=True, errors="coerce")
    if corrected_at.isna().any():
        bad = int(corrected_at.isna().sum())
        raise DataError(
            f"{path}: {bad} row(s) have no readable date in {CSV_CORRECTED!r} or {CSV_DATE!r}; "
            "the time split needs one per correction"
        )
    frame = pd.DataFrame(
        {
            "ticket_id": raw[CSV_ID] if CSV_ID in raw.columns else pd.Series(range(len(raw))).astype(str),
            "text": raw[CSV_TEXT].map(_unescape).str.strip(),
            "label": raw[CSV_LABEL].map(_unescape).str.strip(),
            "corrected_at": corrected_at,
            "order": range(len(raw)),
        }
    )
    # rows without an id cannot be matched across corrections: each is its own ticket
    no_id = frame["ticket_id"].astype(str).str.strip() == ""
    frame.loc[no_id, "ticket_id"] = "row-" + frame.loc[no_id, "order"].astype(str)
    start = _since_ts(since)
    return frame if start is None else frame[frame["corrected_at"] >= start]


def _unescape(cell: str) -> str:
    """Undo the export's formula guard: "'=SUM" was "=SUM" (a text that truly began with "'=" is
    rare enough to accept the loss of its quote)."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(_FORMULA_START) else cell
