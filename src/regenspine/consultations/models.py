"""A doctor's consultation for an episode: history, medication, imaging per level, diagnoses."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from regenspine.db import Base, UTCDateTime, utcnow


class Consultation(Base):
    """A doctor's assessment. A change adds a new version; earlier versions stay as they were."""

    __tablename__ = "consultations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("episodes.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    recorded_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    recorded_by_name: Mapped[str] = mapped_column(String(200))
    change_reason: Mapped[str | None] = mapped_column(Text)
    presenting_complaint: Mapped[str] = mapped_column(Text)
    pain_weeks: Mapped[int | None] = mapped_column(Integer)
    physiotherapy_weeks: Mapped[int | None] = mapped_column(Integer)
    prior_treatments: Mapped[str | None] = mapped_column(Text)
    prior_fusion_levels: Mapped[list[str]] = mapped_column(JSON, default=list)
    medications: Mapped[str | None] = mapped_column(Text)
    anticoagulant: Mapped[bool] = mapped_column(Boolean, default=False)
    history_cancer: Mapped[bool] = mapped_column(Boolean, default=False)
    active_malignancy: Mapped[bool] = mapped_column(Boolean, default=False)
    active_infection: Mapped[bool] = mapped_column(Boolean, default=False)
    bleeding_disorder: Mapped[bool] = mapped_column(Boolean, default=False)
    pregnancy: Mapped[bool] = mapped_column(Boolean, default=False)
    immunosuppression: Mapped[bool] = mapped_column(Boolean, default=False)
    bmi: Mapped[float | None] = mapped_column(Float)
    imaging_modality: Mapped[str | None] = mapped_column(String(20))
    imaging_date: Mapped[date | None] = mapped_column(Date)
    # Per spinal level: {"L4-L5": {"pfirrmann": 4, "herniation": "protrusion", ...}}
    level_findings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # [{"condition": "disc_protrusion", "levels": ["L4-L5"], "side": "left"}]
    diagnoses: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    target_levels: Mapped[list[str]] = mapped_column(JSON, default=list)
