"""Typed settings, read once at start-up from the environment (and a .env file)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEDGER_", env_file=".env", extra="ignore", env_ignore_empty=True)

    data_dir: Path = Path("data")
    database_url: str | None = None
    database_schema: str = "public"
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    quote_secret: SecretStr | None = None
    clock: Literal["system", "sandbox"] = "system"
    payments: Literal["simulated", "stripe"] = "simulated"
    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None
    stripe_publishable_key: str | None = None
    """``pk_…``: with ``payments=stripe``, the portal page collects cards with Stripe.js Elements under this key
    (the card goes to Stripe, never to this service); the page learns it from ``GET /v1/payment-config``."""
    smtp_url: str | None = None
    mail_from: str = "Lens <no-reply@lens.example>"
    catalog: Path | None = None
    projection_batch_size: int = Field(2000, ge=1, le=100_000)
    projection_poll_seconds: float = Field(0.25, gt=0, le=3600)
    """How often the read models look for new events when nothing woke them (a save in their process, a pipe from
    ``ledger serve``, PostgreSQL's LISTEN): a missed or lost notice costs at most this much lag."""
    sandbox_data: bool | None = None
    """Seed a sandbox reseller on an empty store. Default: on for the embedded default, off on PostgreSQL."""
    max_body_bytes: int = Field(1_048_576, ge=1)
    """A request body larger than this is refused with 413 before it is read whole."""
    body_timeout_seconds: float = Field(10.0, gt=0)
    """The longest wait for the next piece of a request body the API is reading; then 408."""
    header_timeout_seconds: float = Field(10.0, gt=0)
    """``ledger serve``: the longest a connection may take to send a request's header, from its opening or
    from the end of the previous answer; then it is closed."""
    keep_alive_seconds: int = Field(5, ge=1)
    """``ledger serve``: an idle connection between two requests is closed after this."""
    max_connections: int = Field(1000, ge=1)
    """``ledger serve``: open connections (and requests in progress) per worker process; beyond, 503."""
    log_format: Literal["json", "text"] | None = None
    """Log lines as JSON or as text; by default text on a terminal and JSON elsewhere."""
    scheduler_metrics_port: int | None = Field(None, ge=0, le=65535)
    """A process that runs the scheduler serves its Prometheus metrics on this port (``ledger scheduler`` in the
    PostgreSQL layout, whose renewals, charges and declines are counted there); unset, it serves none. The API
    process serves its own at ``GET /metrics``."""
    scheduler_metrics_host: str = "127.0.0.1"
    """The address that port listens on: ``0.0.0.0`` for Prometheus in another container."""
    scheduler_processes: int = Field(0, ge=0, le=16)
    """PostgreSQL only: the scheduler hands a backlog of due subscriptions (a page of 500 or more at once) to this many
    worker processes, each renewing and saving its own batches, for more renewals a second than one interpreter
    computes. 0 (the default): renewals run in the scheduler's process, on two threads."""
    recovery_grace_seconds: float = Field(60.0, ge=0)
    """A charge intent left open this long is settled by recovery (asked of the processor, refunded or closed):
    longer than a live command holds one, and than a dead process's request may still be in flight."""

    webhooks_allow_private: bool = False
    """Allow webhook endpoints whose URL resolves to loopback, link-local or private addresses (development and
    tests); refused with 422 otherwise."""
    webhooks_timeout_seconds: float = Field(10.0, gt=0, le=120)
    """The longest wait for a webhook receiver, per network step; a timeout is a failed attempt, retried."""
    webhooks_concurrency: int = Field(8, ge=1, le=256)
    """Endpoints delivered to at once by one process (one delivery at a time per endpoint)."""

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, url: str | None) -> str | None:
        if url and not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return url or None

    @field_validator("database_schema")
    @classmethod
    def _plain_schema(cls, schema: str) -> str:
        if not schema.isidentifier() or not schema.isascii():
            raise ValueError("must be a plain SQL identifier")
        return schema

    @field_validator("stripe_publishable_key")
    @classmethod
    def _publishable(cls, key: str | None) -> str | None:
        if key is not None and not key.startswith("pk_"):
            raise ValueError("must be a Stripe publishable key (pk_…), never a secret one")
        return key

    @model_validator(mode="after")
    def _stripe_needs_keys(self) -> Settings:
        if self.payments == "stripe" and self.stripe_secret_key is None:
            raise ValueError("LEDGER_PAYMENTS=stripe needs LEDGER_STRIPE_SECRET_KEY")
        return self

    @model_validator(mode="after")
    def _processes_need_postgres(self) -> Settings:
        if self.scheduler_processes and self.database_url is None:
            raise ValueError("LEDGER_SCHEDULER_PROCESSES needs LEDGER_DATABASE_URL (the embedded default has one "
                             "writer)")
        return self

    @property
    def uses_postgres(self) -> bool:
        return self.database_url is not None

    @property
    def seeds_sandbox(self) -> bool:
        return self.sandbox_data if self.sandbox_data is not None else not self.uses_postgres


class SettingsError(Exception):
    """The environment holds a setting the service cannot use."""


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        # A rule across settings (its message names them) has no single setting to name.
        problems = "; ".join(
            f"LEDGER_{'_'.join(str(part) for part in e['loc']).upper()}: {e['msg']}" if e["loc"]
            else e["msg"].removeprefix("Value error, ")
            for e in error.errors()
        )
        raise SettingsError(problems) from None
