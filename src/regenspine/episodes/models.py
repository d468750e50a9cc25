"""Episodes, their transition history, and the consents that allow their steps."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from regenspine.db import Base, UTCDateTime, utcnow


class Episode(Base):
    __tablename__ = "episodes"
    __table_args__ = (Index("ix_episodes_state", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    condition_code: Mapped[str] = mapped_column(String(60))
    region: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(30))
    cycle: Mapped[int] = mapped_column(Integer, default=1)
    max_cycles: Mapped[int] = mapped_column(Integer)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    opened_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    version: Mapped[int] = mapped_column(Integer, default=1)


class EpisodeEvent(Base):
    """One transition: from, to, which step, who, when and why; appended, never changed."""

    __tablename__ = "episode_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("episodes.id"), index=True)
    step: Mapped[str] = mapped_column(String(30))
    from_state: Mapped[str | None] = mapped_column(String(30))
    to_state: Mapped[str] = mapped_column(String(30))
    cycle: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor_name: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)


class Consent(Base):
    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("episodes.id"), index=True)
    cycle: Mapped[int] = mapped_column(Integer)
    document_code: Mapped[str] = mapped_column(String(40))
    document_version: Mapped[int] = mapped_column(Integer)
    document_hash: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(5))
    levels: Mapped[list[str]] = mapped_column(JSON, default=list)
    method: Mapped[str] = mapped_column(String(20))  # tablet_signature | scanned_form
    signed_name: Mapped[str] = mapped_column(String(200))
    explained_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    explained_by_name: Mapped[str] = mapped_column(String(200))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    scan_content_type: Mapped[str | None] = mapped_column(String(40))
    scan_sha256: Mapped[str | None] = mapped_column(String(64))
    scan_data: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    withdrawn_reason: Mapped[str | None] = mapped_column(Text)
    withdrawn_recorded_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
