"""Service settings: one pydantic-settings object, read from `TRIAGE_*` environment variables.

Built by the CLI or by tests and handed to `create_app`; nothing here runs at import.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///triage.db"


class Settings(BaseSettings):
    """Everything `triage serve` can be told; each field is also `TRIAGE_<NAME>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="TRIAGE_", extra="ignore", protected_namespaces=())

    model_dir: Path | None = Field(None, description="model folder written by `triage train` (or `triage export`)")
    backend: str = Field("auto", description="inference backend: auto (fastest in the folder), torch or onnx")
    routing_file: Path | None = Field(None, description="routing rules YAML; the shipped CFPB default when unset")
    database_url: str = Field(DEFAULT_DATABASE_URL, description="SQLAlchemy URL: sqlite:///file.db or postgresql+psycopg://...")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    auth: bool = Field(True, description="require API keys; --no-auth turns this off for local use")
    max_batch_size: int = Field(32, ge=1, le=1024, description="most texts one model call classifies")
    max_wait_ms: float = Field(5.0, ge=0, le=10_000, description="how long the first text of a batch waits for company")
    max_text_bytes: int = Field(64 * 1024, ge=1, description="longest subject+body or text, in UTF-8 bytes (else 413)")
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="largest request body (else 413)")
    classify_max_texts: int = Field(64, ge=1, le=4096, description="most texts one POST /v1/classify takes")
    retry_interval_s: float = Field(15.0, gt=0, description="how often unclassified tickets are retried")
    migrate_on_start: bool = Field(True, description="apply Alembic migrations when the app starts")
    sqlite_busy_timeout_ms: int = Field(5000, ge=0)

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("database_url must be sqlite:///path.db or postgresql+psycopg://user:pass@host/db")
        if value.startswith("postgresql://"):
            # psycopg 3 is the driver we ship; plain postgresql:// would ask for psycopg2.
            value = "postgresql+psycopg://" + value[len("postgresql://"):]
        return value
