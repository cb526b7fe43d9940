"""What the console pages show, apart from the routes: the list filters read from the query
string (blank form fields are "no filter", bad ones a message on the page, never a 422 JSON),
one ticket as a row, and the page labels ("1–50 of 230", which way "newer" points)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from ..models import Ticket, TicketStatus, WorkState
from ..routing import RoutingRules
from ..schemas import Channel

SORTS = {"newest": "Newest first", "oldest-open": "Oldest open first"}
PAGE_SIZE = 50


class FilterError(ValueError):
    """A filter the agent typed that cannot be read: shown above the list."""


@dataclass
class Filters:
    queue: str | None = None
    q: str | None = None
    status: str | None = None
    category: str | None = None
    channel: str | None = None
    work_state: str | None = None
    created_from: str | None = None  # YYYY-MM-DD, inclusive (the agent's dates, read as UTC days)
    created_to: str | None = None  # YYYY-MM-DD, inclusive
    confidence_min: str | None = None
    confidence_max: str | None = None
    sort: str = "newest"

    @classmethod
    def from_query(cls, params, labels: list[str]) -> Filters:
        values = {f.name: (params.get(f.name) or "").strip()[:200] or None for f in fields(cls)}
        values["sort"] = values["sort"] or "newest"
        filters = cls(**values)
        filters.check(labels)
        return filters

    def check(self, labels: list[str]) -> None:
        choices = {
            "sort": SORTS,
            "status": TicketStatus.ALL,
            "work_state": WorkState.ALL,
            "channel": [c.value for c in Channel],
            "category": labels,
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise FilterError(f"{name.replace('_', ' ')} {value!r} is not one of: {', '.join(allowed)}")
        for name in ("created_from", "created_to"):
            _day(getattr(self, name), name)
        for name in ("confidence_min", "confidence_max"):
            _probability(getattr(self, name), name)

    @property
    def searching(self) -> bool:
        """Any filter besides the queue and the order: the list spans every queue unless one is picked."""
        return any(v for k, v in asdict(self).items() if k not in ("queue", "sort"))

    def crud_kwargs(self) -> dict[str, Any]:
        """The filters for crud.list_tickets: only those set, and the order."""
        start, end = _day(self.created_from, "created_from"), _day(self.created_to, "created_to")
        kwargs: dict[str, Any] = {
            "queue": self.queue,
            "q": self.q,
            "status": self.status,
            "category": self.category,
            "channel": self.channel,
            "work_state": self.work_state,
            "created_from": start,
            "created_to": end + timedelta(days=1) if end else None,  # the "to" day is included
            "confidence_min": _probability(self.confidence_min, "confidence_min"),
            "confidence_max": _probability(self.confidence_max, "confidence_max"),
            "sort": self.sort,
        }
        return {k: v for k, v in kwargs.items() if v is not None}

    def url(self, **changes: Any) -> str:
        """This list's address with `changes` (offset, sort, queue...), blank filters left out."""
        values = {**asdict(self), **changes}
        if values.get("sort") == "newest":
            values.pop("sort")
        return "/?" + urlencode({k: v for k, v in values.items() if v not in (None, "", 0)})

    def queue_url(self, queue: str) -> str:
        """A queue's list in this order, without the search filters."""
        return Filters(queue=queue, sort=self.sort).url()


def _day(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), time(), tzinfo=timezone.utc)
    except ValueError:
        raise FilterError(f"{name.replace('_', ' ')} {value!r} is not a date: use YYYY-MM-DD") from None


def _probability(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0.0 <= number <= 1.0:
        raise FilterError(f"{name.replace('_', ' ')} {value!r} is not a number from 0 to 1")
    return number


@dataclass
class Pager:
    """Labels and links of one page: "1–50 of 230"; `previous` goes to the page before in the
    list's own order, so with newest first it shows newer tickets, with oldest first older ones."""

    offset: int
    shown: int
    total: int
    sort: str

    @property
    def label(self) -> str:
        if not self.total:
            return "0 of 0"
        return f"{self.offset + 1}–{self.offset + self.shown} of {self.total}"

    @property
    def previous_offset(self) -> int | None:
        return max(self.offset - PAGE_SIZE, 0) if self.offset else None

    @property
    def next_offset(self) -> int | None:
        return self.offset + PAGE_SIZE if self.offset + PAGE_SIZE < self.total else None

    @property
    def previous_text(self) -> str:
        return "← Newer" if self.sort == "newest" else "← Older"

    @property
    def next_text(self) -> str:
        return "Older →" if self.sort == "newest" else "Newer →"


@dataclass
class Row:
    """One ticket as the console shows it: the model's view and the agent's kept apart (defect 2)."""

    ticket: Ticket
    model_category: str | None
    model_confidence: float | None  # the model's probability of ITS category, whatever the agent set
    agent_category: str | None  # set once an agent corrected or confirmed
    top: list[tuple[str, float]]
    threshold: float
    work_state: str
    assignee: str | None

    @property
    def below_threshold(self) -> bool:
        return self.model_confidence is not None and self.model_confidence < self.threshold

    @property
    def alternatives(self) -> list[str]:
        """The top categories other than the current one: one-click corrections."""
        return [c for c, _ in self.top if c != self.ticket.category]


def make_row(ticket: Ticket, rules: RoutingRules) -> Row:
    probabilities = ticket.probabilities or {}
    model_category = ticket.predicted_category
    if model_category is None and ticket.status != TicketStatus.UNCLASSIFIED:
        model_category = ticket.category
    model_confidence = probabilities.get(model_category) if model_category else None
    if model_confidence is None:
        model_confidence = ticket.confidence
    agent_set = ticket.status in (TicketStatus.CORRECTED, TicketStatus.CONFIRMED)
    route = rules.routes.get(model_category or "")
    return Row(
        ticket=ticket,
        model_category=model_category,
        model_confidence=model_confidence,
        agent_category=ticket.category if agent_set else None,
        top=sorted(probabilities.items(), key=lambda kv: -kv[1])[:3],
        threshold=route.threshold if route else rules.default_threshold,
        work_state=ticket.work_state or WorkState.OPEN,
        assignee=ticket.assignee,
    )
