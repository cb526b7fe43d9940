"""Service settings: one pydantic-settings object, read from `TRIAGE_*` environment variables.

Built by the CLI or by tests and handed to `create_app`; nothing here runs at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///triage.db"


class Settings(BaseSettings):
    """Everything `triage serve` can be told; each field is also `TRIAGE_<NAME>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="TRIAGE_", extra="ignore", protected_namespaces=())

    model_dir: Path | None = Field(None, description="model folder written by `triage train` (or `triage export`)")
    backend: str = Field(
        "auto",
        description="inference backend: auto (the fastest on this machine), torch, torch-bf16, onnx, onnx-fp32 or onnx-int8",
    )
    device: str = Field("auto", description="where PyTorch runs: auto (CUDA, MPS, CPU), cpu, cuda, cuda:N, mps")
    ensemble: bool | None = Field(
        None,
        description="mix in the folder's TF-IDF model: unset follows its triage.json, false scores with the transformer alone",
    )
    routing_file: Path | None = Field(None, description="routing rules YAML; the shipped CFPB default when unset")
    database_url: str = Field(
        DEFAULT_DATABASE_URL, description="SQLAlchemy URL: sqlite:///file.db or postgresql+psycopg://..."
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    auth: bool = Field(True, description="require API keys; --no-auth turns this off for local use")
    max_batch_size: int = Field(32, ge=1, le=1024, description="most texts one model call classifies")
    max_wait_ms: float = Field(5.0, ge=0, le=10_000, description="how long the first text of a batch waits for company")
    max_text_bytes: int = Field(64 * 1024, ge=1, description="longest subject+body or text, in UTF-8 bytes (else 413)")
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="largest request body (else 413)")
    metadata_max_depth: int = Field(
        16, ge=1, le=100, description="most levels a ticket's metadata may nest ({} is one level; else 422)"
    )
    metadata_max_bytes: int = Field(64 * 1024, ge=2, description="largest metadata, as compact UTF-8 JSON (else 422)")
    classify_max_texts: int = Field(64, ge=1, le=4096, description="most texts one POST /v1/classify takes")
    retry_interval_s: float = Field(15.0, gt=0, description="how often unclassified tickets are retried")
    migrate_on_start: bool = Field(True, description="apply Alembic migrations when the app starts")
    sqlite_busy_timeout_ms: int = Field(5000, ge=0)
    api_key_cache_s: float = Field(
        10.0,
        ge=0,
        le=300,
        description="how long a checked API key is trusted without asking the database: a revoked key stops working within this time on every replica (0: check every request)",
    )
    public_docs: bool = Field(
        False,
        description="serve /docs, /redoc and /openapi.json without a key (with auth on they need an agent key by default: the document maps the whole API)",
    )
    public_metrics: bool = Field(
        False,
        description="serve /metrics without a key, for a scraper on a private network (by default it needs an agent key: it shows queues, volumes and the model)",
    )
    forwarded_allow_ips: str | None = Field(
        None,
        description="comma-separated IPs or networks of the TLS-terminating proxies whose X-Forwarded-Proto and X-Forwarded-For are believed ('*': any peer; unset: none)",
    )
    min_free_disk_mb: float = Field(
        64.0, ge=0, description="below this much free space in a SQLite database's folder, /readyz says not ready"
    )

    # -- model versions (registry.py, live_model.py, shadow.py) --------------------------------
    registry_dir: Path | None = Field(
        None,
        description="model registry folder (`triage models register`): serve its active version, switch versions live; model_dir is then not needed",
    )
    registry_poll_s: float = Field(
        2.0, gt=0, le=3600, description="how often the registry's index is checked for a promote made elsewhere"
    )
    shadow: bool = Field(True, description="run the registry's shadow version (if one is set) beside the active one")
    shadow_max_pending: int = Field(
        1000, ge=1, description="most tickets waiting for the shadow model; beyond, tickets are skipped (counted)"
    )

    # -- notifications (the outbox of e-mails and webhooks for routed tickets) -------------------
    public_url: str | None = Field(
        None,
        description="the service's address as people reach it, for links in notifications (default http://HOST:PORT)",
    )
    notify: bool = Field(True, description="deliver notifications from this process (the outbox is filled either way)")
    notify_poll_s: float = Field(2.0, gt=0, le=3600, description="how often the deliverer looks for due notifications")
    notify_batch_size: int = Field(20, ge=1, le=1000, description="most notifications claimed in one round")
    notify_concurrency: int = Field(
        50, ge=1, le=1000, description="most notifications being sent at once, all targets together"
    )
    notify_per_target: int = Field(
        4,
        ge=1,
        le=100,
        description="most notifications being sent at once to one webhook host (or to the SMTP server): a slow one cannot hold up the others",
    )
    notify_max_attempts: int = Field(8, ge=1, le=100, description="attempts before a notification is marked failed")
    notify_backoff_s: float = Field(
        30.0, ge=0, description="wait after the first failed attempt; doubled after each further one"
    )
    notify_backoff_max_s: float = Field(3600.0, ge=0, description="longest wait between two attempts")
    notify_lease_s: float = Field(
        300.0,
        gt=0,
        description="how long a claimed notification is another replica's; after that (a crash) it is claimed again",
    )
    webhook_timeout_s: float = Field(10.0, gt=0, le=300, description="timeout of one webhook POST")
    webhook_secret: SecretStr | None = Field(
        None, description="signs webhook bodies: X-Triage-Signature-256: sha256=HMAC-SHA256(secret, body) in hex"
    )
    smtp_host: str | None = Field(
        None, description="SMTP server for e-mail notifications; unset: e-mails are marked skipped"
    )
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_from: str = Field("ticket-triage@localhost", description="From: address of notification e-mails")
    smtp_security: Literal["none", "starttls", "ssl"] = Field(
        "none", description="none, starttls (upgrade after connecting) or ssl (implicit TLS, port 465)"
    )
    smtp_username: str | None = Field(None, description="SMTP login (needs smtp_security starttls or ssl)")
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = Field(30.0, gt=0, le=300)

    # -- drift alarms (service/drift.py; thresholds and targets are in the routing YAML's `drift:`) --
    drift_check_interval_s: float = Field(
        300.0, gt=0, le=86400, description="how often the category mix and confidence are checked for drift"
    )

    # -- explanations (GET /v1/tickets/{id}/explanation, explain.py) ----------------------------
    # 20 Gauss-Legendre steps: attributions within 0.2% of the logit change they split, at half
    # the cost of 50 (bench/explain_speed.py); word rankings do not move at that error.
    explain_steps: int = Field(
        20, ge=1, le=1000, description="integration steps of one explanation: fewer is faster and less exact"
    )
    explain_max_pending: int = Field(
        32, ge=1, le=10_000, description="explanations waiting to be computed before new requests get 503"
    )

    # -- people: console sessions and a reverse proxy's user header (issue 18) --------------------
    session_secret: SecretStr | None = Field(
        None,
        min_length=16,
        description="signs console session cookies (16+ characters; the same on every replica); unset: a random secret per process, so sessions end at restart",
    )
    session_max_age_s: float = Field(
        8 * 3600, ge=60, le=30 * 86400, description="how long a console sign-in lasts, in seconds (default 8 hours)"
    )
    trusted_user_header: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9-]{1,100}$",
        description="a header naming the person a reverse proxy signed in (e.g. X-Forwarded-User); believed only from forwarded_allow_ips",
    )

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("database_url must be sqlite:///path.db or postgresql+psycopg://user:pass@host/db")
        if value.startswith("postgresql://"):
            # psycopg 3 is the driver we ship; plain postgresql:// would ask for psycopg2.
            value = "postgresql+psycopg://" + value[len("postgresql://") :]
        return value

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("public_url must be an http(s) URL, e.g. https://triage.example.com")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _no_clear_text_login(self):
        if self.smtp_username and self.smtp_security == "none":
            raise ValueError(
                "an SMTP login needs an encrypted connection: set smtp_security to starttls or ssl (TRIAGE_SMTP_SECURITY)"
            )
        if self.trusted_user_header and not self.forwarded_allow_ips:
            raise ValueError(
                "trusted_user_header needs forwarded_allow_ips: the proxies whose user header is believed (TRIAGE_FORWARDED_ALLOW_IPS)"
            )
        if self.notify_backoff_max_s < self.notify_backoff_s:
            raise ValueError("notify_backoff_max_s must be at least notify_backoff_s")
        return self

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"
