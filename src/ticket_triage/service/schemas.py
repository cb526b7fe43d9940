"""API schemas: a Base/Create/Public family per entity (pydantic v2)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, computed_field

# Every id column is INTEGER: 32-bit on PostgreSQL (64-bit on SQLite), so larger ids cannot
# exist, and the driver overflows on them; path and query ids are bounded to this.
DB_INT_MAX = 2**31 - 1


def _storable(value: str) -> str:
    """Text every database stores and every reply can encode: no lone UTF-16 surrogate (JSON
    allows the escape "\\ud800"), no NUL (PostgreSQL text cannot hold it)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"holds a lone UTF-16 surrogate (U+{ord(value[exc.start]):04X}) at character {exc.start}, which is not text: send valid Unicode"
        ) from None
    if "\x00" in value:
        raise ValueError(
            f"holds a NUL character (\\u0000) at character {value.index(chr(0))}, which cannot be stored: remove it"
        )
    return value


def _has_text(value: str) -> str:
    if not value.strip():
        raise ValueError("must contain some text, not only whitespace")
    return value


def _storable_json(value: dict[str, Any]) -> dict[str, Any]:
    """Metadata every database stores and reads back: strings (keys too) valid Unicode, numbers finite."""
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            "holds a lone UTF-16 surrogate (such as \\ud800) in a key or a string, which is not text: send valid Unicode"
        ) from None
    except ValueError:
        raise ValueError(
            "holds a number that is not finite (NaN, Infinity or too large for a float): send finite numbers"
        ) from None
    return value


def encodable(value: Any) -> Any:
    """`value` with every string (keys too) UTF-8-encodable: a lone surrogate becomes the text \\ud800."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, (list, tuple)):
        return [encodable(v) for v in value]
    if isinstance(value, dict):
        return {encodable(k): encodable(v) for k, v in value.items()}
    return value


def _readable_json(value: dict[str, Any]) -> dict[str, Any]:
    """Stored metadata as a reply can send it: rows stored before `_storable_json` existed
    may hold a lone surrogate (a JSON column keeps the escape), which would fail every list."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return encodable(value)
    return value


def _utc(value: datetime) -> datetime:
    """A filter date as UTC (no offset: UTC, as stored); one that falls outside years 1-9999 in UTC is refused."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(
            "is outside the dates that can be stored (years 1 to 9999 in UTC): send a nearer date"
        ) from None


def _iso(value: Any) -> Any:
    """Dates as ISO 8601 text only: pydantic would also read "0.5" as a Unix time."""
    if isinstance(value, str) and not ISO_DATE.match(value):
        raise ValueError("must be an ISO 8601 date-time, e.g. 2026-12-01T09:30:00Z")
    return value


ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# The same rules as _storable and _has_text, for the OpenAPI document (a lone surrogate cannot
# be written as a pattern): no NUL, and for texts at least one character that str.isspace() is
# not (the class lists exactly those characters, so the schema and the code agree).
_SPACE = r"\t\n\u000b\u000c\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NO_NUL = r"^[^\u0000]*$"
SOME_TEXT = rf"^[^\u0000]*[^\u0000{_SPACE}][^\u0000]*$"

Str = Annotated[str, AfterValidator(_storable), Field(json_schema_extra={"pattern": NO_NUL})]
Text = Annotated[
    str,
    Field(min_length=1, json_schema_extra={"pattern": SOME_TEXT}),
    AfterValidator(_storable),
    AfterValidator(_has_text),
]
Metadata = Annotated[dict[str, Any], AfterValidator(_storable_json)]
UTCDateTime = Annotated[datetime, BeforeValidator(_iso), AfterValidator(_utc)]


class Channel(str, Enum):
    web = "web"
    email = "email"
    chat = "chat"
    webhook = "webhook"
    phone = "phone"
    api = "api"


class TicketBase(BaseModel):
    subject: Str = Field("", max_length=1000, description="short title; may be empty")
    body: Text = Field(..., description="the customer's text (subject + body at most 64 KiB)")
    channel: Channel = Field(Channel.api, description="where the ticket came from")
    customer_ref: Str | None = Field(None, max_length=200, description="the customer's id in your systems")
    metadata: Metadata = Field(
        default_factory=dict,
        description="free key/value data kept with the ticket (limits: TRIAGE_METADATA_MAX_DEPTH, TRIAGE_METADATA_MAX_BYTES)",
    )


class TicketCreate(TicketBase):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "subject": "Wrong late payment on my report",
                    "body": "My credit report shows a late payment I never made and the bureau ignores my dispute.",
                    "channel": "web",
                    "customer_ref": "C-1042",
                    "metadata": {"locale": "en-US"},
                }
            ]
        },
    )


class FeedbackPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    agent: str
    previous_category: str | None
    previous_queue: str
    category: str
    queue: str
    note: str | None
    kind: str = Field(
        "correction", description="correction (another category) or confirmation (the model's category accepted)"
    )
    model_version: str | None = Field(None, description="the model whose prediction was corrected or confirmed")


class CategoryProbability(BaseModel):
    category: str
    probability: float


class TicketPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    updated_at: datetime
    subject: str
    body: str
    channel: str
    customer_ref: str | None
    metadata: Annotated[dict[str, Any], AfterValidator(_readable_json)] = Field(validation_alias="metadata_")
    status: str
    category: str | None
    confidence: float | None
    probabilities: dict[str, float] | None
    predicted_category: str | None = Field(description="what the model said, kept after a correction")
    queue: str
    model_version: str | None
    feedback: list[FeedbackPublic] = Field(default_factory=list)
    work_state: str = Field("open", description="open, assigned (to `assignee`) or done")
    assignee: str | None = None

    # Derived from the stored prediction: the console shows why a ticket went where it did, and
    # never pairs the model's confidence with a category an agent chose (issue 18, defect 2).
    @computed_field(description="the model's three most likely categories, most likely first")
    @property
    def top(self) -> list[CategoryProbability]:
        ranked = sorted((self.probabilities or {}).items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        return [CategoryProbability(category=c, probability=p) for c, p in ranked]

    @computed_field(description="the model's probability for `predicted_category` (its own prediction)")
    @property
    def model_confidence(self) -> float | None:
        if self.predicted_category is None:
            return None
        return (self.probabilities or {}).get(self.predicted_category, self.confidence)

    @computed_field(
        description="the model's probability for the current `category` (an agent's choice after a correction)"
    )
    @property
    def category_probability(self) -> float | None:
        if self.category is None or not self.probabilities:
            return None
        return self.probabilities.get(self.category)


class TicketsPublic(BaseModel):
    items: list[TicketPublic]
    count: int = Field(description="tickets matching the filters (all pages)")
    limit: int
    offset: int


class FeedbackCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: Str = Field(
        ..., min_length=1, max_length=100, description="the right category (one of the model's labels)"
    )
    note: Str | None = Field(None, max_length=2000)
    agent: Str | None = Field(None, max_length=200, description="who corrects; with API keys the key's name is used")


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[Text] = Field(..., min_length=1, description="one or more non-empty texts (at most classify_max_texts)")


class PredictionPublic(BaseModel):
    category: str
    confidence: float
    probabilities: dict[str, float]
    queue: str
    needs_review: bool


class ClassifyResponse(BaseModel):
    model_version: str
    predictions: list[PredictionPublic]


class QueuePublic(BaseModel):
    queue: str
    count: int = Field(description="open work: tickets in the queue not done")
    open_by_status: dict[str, int] = Field(description="open work by ticket status")
    total: int = Field(0, description="every ticket in the queue, done ones too")
    latest_id: int | None = Field(None, description="the newest ticket's id (poll with ?since= to learn of new ones)")
    new: int | None = Field(None, description="tickets with an id above `since` (only when `since` was given)")


class Message(BaseModel):
    detail: str


class NotificationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    ticket_id: int | None = Field(description="the ticket announced (None for a drift alarm)")
    created_at: datetime
    updated_at: datetime
    event: str = Field(
        description="created, rerouted (an agent's correction), classified (an unclassified ticket classified later) or drift (a drift alarm, no ticket)"
    )
    kind: str = Field(description="email or webhook")
    target: str = Field(description="the e-mail address, or the webhook's scheme and host (its path may hold a token)")
    queue: str
    status: str = Field(description="pending, sending, sent, failed or skipped")
    attempts: int
    next_attempt_at: datetime | None = Field(description="when the next attempt is due (open notifications only)")
    last_error: str | None
    sent_at: datetime | None


class NotificationsPublic(BaseModel):
    items: list[NotificationPublic]
    count: int = Field(description="notifications matching the filters (all pages)")
    limit: int
    offset: int


# -- issue 18: confirmations, work states, bulk actions, history -----------------------------------
WorkStateName = Literal["open", "assigned", "done"]
BULK_MAX = 500


class ConfirmCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Str | None = Field(None, max_length=2000)
    agent: Str | None = Field(None, max_length=200, description="who confirms; with API keys the key's name is used")


class WorkUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: WorkStateName = Field(..., description="open (clears the assignee), assigned or done")
    assignee: Str | None = Field(
        None, min_length=1, max_length=200, description="who works on it; assigned without one: the caller"
    )
    note: Str | None = Field(None, max_length=2000)


class _Bulk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[int, Field(ge=1, le=DB_INT_MAX)]] = Field(
        ..., min_length=1, max_length=BULK_MAX, description=f"the tickets (1 to {BULK_MAX})"
    )
    note: Str | None = Field(None, max_length=2000)


class BulkCorrect(_Bulk):
    action: Literal["correct"]
    category: Str = Field(
        ..., min_length=1, max_length=100, description="the right category (one of the model's labels)"
    )


class BulkAssign(_Bulk):
    action: Literal["assign"]
    assignee: Str | None = Field(None, min_length=1, max_length=200, description="who (default: the caller)")


class BulkSimple(_Bulk):
    action: Literal["confirm", "done", "reopen"]


# One schema per action (OpenAPI oneOf on `action`), so the document says what each needs.
BulkAction = Annotated[BulkCorrect | BulkAssign | BulkSimple, Field(discriminator="action")]


class BulkResult(BaseModel):
    id: int
    ok: bool
    detail: str | None = None


class BulkResponse(BaseModel):
    results: list[BulkResult]


class HistoryEvent(BaseModel):
    at: datetime
    kind: Literal["prediction", "correction", "confirmation", "work"]
    by: str
    category: str | None = None
    from_: str | None = Field(None, alias="from", serialization_alias="from")
    note: str | None = None
    model_version: str | None = None
    confidence: float | None = None
    state: str | None = None
    assignee: str | None = None

    model_config = ConfigDict(populate_by_name=True)


class HistoryPublic(BaseModel):
    events: list[HistoryEvent]
    notifications: list[NotificationPublic]
