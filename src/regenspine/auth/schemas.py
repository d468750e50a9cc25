"""API shapes for staff accounts and tokens (XCreate / XUpdate / XPublic)."""

from __future__ import annotations

from datetime import datetime

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
    days_valid: int | None = Field(default=90, ge=1, le=366)


class ApiTokenPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str
    scopes: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiTokenCreated(ApiTokenPublic):
    token: str = Field(description="Shown once; store it safely. Only its hash is kept.")
