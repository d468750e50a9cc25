"""API shapes for the audit log."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class AuditRecordPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    at: datetime
    actor_username: str
    actor_role: str
    action: str
    entity_type: str
    entity_id: str
    patient_id: int | None
    source_ip: str
    outcome: str
    detail: str
    prev_hash: str
    hash: str


class AuditPagePublic(BaseModel):
    items: list[AuditRecordPublic]
    total: int
    page: int
    pages: int


class ChainStatus(BaseModel):
    intact: bool
    records: int
    head_hash: str
    first_break_seq: int | None = None
    first_break_kind: str | None = None
    explanation: str | None = None
