"""API shapes for staff accounts and tokens (XCreate / XUpdate / XPublic)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from regenspine.auth.permissions import Role


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserCreate(Strict):
    username: str = Field(min_length=1, max_length=150)
    full_name: str = Field(min_length=1, max_length=200)
    role: Role
    password: str = Field(min_length=1, max_length=1024)
    email: str | None = Field(default=None, max_length=254)
    language: str = Field(default="en", pattern="^(pl|en)$")


class UserUpdate(Strict):
    role: Role | None = None
    is_active: bool | None = None


class CredentialResetRequest(Strict):
    what: Literal["password", "two_step", "sessions", "api_tokens"] = Field(
        description="password: set a one-time password (returned once, valid 72 hours, only to "
        "choose a new one), end every session and revoke every API token; two_step: turn off "
        "two-step sign-in, end every session and revoke every API token; sessions: sign out "
        "every browser; api_tokens: revoke every API token."
    )
    reason: str = Field(min_length=1, max_length=500, description="Recorded in the audit log.")


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    full_name: str
    role: Role
    is_active: bool
    language: str
    mfa_enabled: bool


class Me(BaseModel):
    username: str
    full_name: str
    role: Role | None
    permissions: list[str]
    via_token: bool
    csrf_token: str | None = Field(
        default=None, description="Send as X-CSRF-Token on writes made with the session cookie."
    )


class ApiTokenCreate(Strict):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(min_length=1, max_length=20)
    days_valid: int = Field(
        default=90, ge=1, le=366, description="Every token expires; at most after 366 days."
    )


class ApiTokenPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str
    scopes: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class CredentialResetDone(BaseModel):
    user: UserPublic
    sessions_ended: int
    api_tokens_revoked: int
    one_time_password: str | None = Field(
        default=None,
        description="Only for a password reset: hand it to the person yourself (in person or "
        "by telephone). Shown once; only its hash is kept.",
    )


class ApiTokenCreated(ApiTokenPublic):
    token: str = Field(description="Shown once; store it safely. Only its hash is kept.")
