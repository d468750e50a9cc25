"""Settings read from the environment (prefix REGENSPINE_), refusing unsafe production use."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

DEFAULT_SECRET_KEY = "development-only-secret-key-change-me"  # noqa: S105 (refused in production)
MIN_PRODUCTION_SECRET_LENGTH = 32


class UnsafeConfiguration(RuntimeError):
    """The configuration is not safe to run with; the message names the variable to set."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REGENSPINE_", env_file=None, extra="ignore")

    env: Literal["development", "production"] = "development"
    database_url: str = "sqlite:///./var/regenspine.db"
    secret_key: str = DEFAULT_SECRET_KEY
    facility_code: str = Field(default="RS", pattern=r"^[A-Z]{2}$")
    base_url: str = "http://127.0.0.1:8000"
    default_language: Literal["pl", "en"] = "en"

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    # PEM file of the authority that signed the mail server's certificate, if the system does
    # not already trust it (a clinic's own CA). The certificate and host name are always checked.
    smtp_ca_file: Path | None = None
    smtp_sender: str = "RegenSpine <no-reply@regenspine.invalid>"

    session_idle_minutes: int = 30
    session_absolute_hours: int = 12
    login_max_failures: int = 5
    login_lock_minutes: int = 15
    login_max_failures_per_ip: int = 30

    # argon2id cost; the defaults follow RFC 9106's second recommended option.
    # Tests lower them, production must not.
    argon2_time_cost: int = 3
    argon2_memory_cost: int = 65536
    argon2_parallelism: int = 4

    max_treatment_cycles: int = Field(default=3, ge=1, le=10)

    # Addresses of the reverse proxies whose X-Forwarded-For / -Proto the app believes
    # (comma-separated IPs or CIDR networks). The client address decides per-address sign-in
    # throttling and is written to the audit log, so only a proxy the clinic runs may set it.
    trusted_proxies: str = Field(default="127.0.0.1", pattern=r"^[0-9A-Fa-f:.,/ ]+$")

    # In production every role signs in with a second step (ASVS V6.3.3): each of them reads
    # patient data. Unset means every role, including any added later. A clinic may narrow it
    # (JSON, e.g. '["admin","doctor"]') at its own risk; API tokens follow the same rule.
    mfa_required_roles: tuple[str, ...] | None = None

    # Words a password must not be built on besides the built-in list (auth/rules.py,
    # CONTEXT_WORDS; ASVS V6.2.11): the clinic's own name, town and street, separated by spaces
    # or commas.
    password_context_words: str = Field(default="", max_length=1000, pattern=r"^[\w ,.'-]*$")

    # The interactive API reference (/api/docs) and its OpenAPI document (/openapi.json).
    # Unset: published in development, not in production, where they would hand a stranger a
    # map of every endpoint (ASVS V13.4.5). The same document is in every development copy.
    publish_api_docs: bool | None = None

    @property
    def api_docs_published(self) -> bool:
        if self.publish_api_docs is None:
            return not self.is_production
        return self.publish_api_docs

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def mfa_enforced(self) -> bool:
        return self.is_production

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.env == "production":
            if (
                self.secret_key == DEFAULT_SECRET_KEY
                or len(self.secret_key) < MIN_PRODUCTION_SECRET_LENGTH
            ):
                raise UnsafeConfiguration(
                    "REGENSPINE_SECRET_KEY must be set to a random value of at least "
                    f"{MIN_PRODUCTION_SECRET_LENGTH} characters when REGENSPINE_ENV=production "
                    "(for example: python -c 'import secrets; print(secrets.token_urlsafe(48))')."
                )
            if not self.smtp_starttls and not _on_this_machine(self.smtp_host):
                raise UnsafeConfiguration(
                    "REGENSPINE_SMTP_STARTTLS must be true when the mail server "
                    f"({self.smtp_host}) is not on this machine: sign-in notices and the mail "
                    "server's password would cross the network unencrypted."
                )
            database = make_url(self.database_url)
            if (
                database.get_backend_name() == "postgresql"
                and not _on_this_machine(database.host)
                and database.query.get("sslmode") not in ("verify-full", "verify-ca")
            ):
                raise UnsafeConfiguration(
                    f"The PostgreSQL server ({database.host}) is not on this machine: add "
                    "?sslmode=verify-full to REGENSPINE_DATABASE_URL, so that patient data "
                    "crosses the network encrypted and only to the server named."
                )
            if self.argon2_time_cost < 2 or self.argon2_memory_cost < 19456:
                raise UnsafeConfiguration(
                    "REGENSPINE_ARGON2_TIME_COST / REGENSPINE_ARGON2_MEMORY_COST are below the "
                    "OWASP minimum (t=2, m=19456 KiB) and may not be used in production."
                )
        return self

    def sqlite_path(self) -> Path | None:
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url.removeprefix("sqlite:///"))
        return None


def _on_this_machine(host: str | None) -> bool:
    """Loopback or a Unix socket (no host, or a socket directory): nothing crosses a network."""
    if not host or host.startswith("/") or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache
def get_settings() -> Settings:
    return Settings()
