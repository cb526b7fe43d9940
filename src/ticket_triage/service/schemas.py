"""API schemas: a Base/Create/Public family per entity (pydantic v2)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _has_text(value: str) -> str:
    if not value.strip():
        raise ValueError("must contain some text, not only whitespace")
    return value


Text = Annotated[str, Field(min_length=1), AfterValidator(_has_text)]


class Channel(str, Enum):
    web = "web"
    email = "email"
    chat = "chat"
    webhook = "webhook"
    phone = "phone"
    api = "api"


class TicketBase(BaseModel):
    subject: str = Field("", max_length=1000, description="short title; may be empty")
    body: Text = Field(..., description="the customer's text (subject + body at most 64 KiB)")
    channel: Channel = Field(Channel.api, description="where the ticket came from")
    customer_ref: str | None = Field(None, max_length=200, description="the customer's id in your systems")
    metadata: dict[str, Any] = Field(default_factory=dict, description="free key/value data kept with the ticket")


class TicketCreate(TicketBase):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "subject": "Wrong late payment on my report",
        "body": "My credit report shows a late payment I never made and the bureau ignores my dispute.",
        "channel": "web",
        "customer_ref": "C-1042",
        "metadata": {"locale": "en-US"},
    }]})


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


class TicketPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    updated_at: datetime
    subject: str
    body: str
    channel: str
    customer_ref: str | None
    metadata: dict[str, Any] = Field(validation_alias="metadata_")
    status: str
    category: str | None
    confidence: float | None
    probabilities: dict[str, float] | None
    predicted_category: str | None = Field(description="what the model said, kept after a correction")
    queue: str
    model_version: str | None
    feedback: list[FeedbackPublic] = Field(default_factory=list)


class TicketsPublic(BaseModel):
    items: list[TicketPublic]
    count: int = Field(description="tickets matching the filters (all pages)")
    limit: int
    offset: int


class FeedbackCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: str = Field(..., min_length=1, max_length=100, description="the right category (one of the model's labels)")
    note: str | None = Field(None, max_length=2000)
    agent: str | None = Field(None, max_length=200, description="who corrects; with API keys the key's name is used")


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
    count: int
    open_by_status: dict[str, int]


class Message(BaseModel):
    detail: str


class NotificationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    ticket_id: int
    created_at: datetime
    updated_at: datetime
    event: str = Field(description="created, rerouted (an agent's correction) or classified (an unclassified ticket classified later)")
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
