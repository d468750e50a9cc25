"""Red-flag screenings and eligibility decisions, each kept with exactly what it saw."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from regenspine.db import Base, UTCDateTime, utcnow


class RedFlagScreening(Base):
    __tablename__ = "red_flag_screenings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("episodes.id"), index=True)
    items_version: Mapped[str] = mapped_column(String(20))
    answers: Mapped[dict[str, bool]] = mapped_column(JSON)
    positive: Mapped[list[str]] = mapped_column(JSON)
    any_positive: Mapped[bool] = mapped_column(Boolean)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    recorded_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    recorded_by_name: Mapped[str] = mapped_column(String(200))
    # A positive screening is cleared only by a doctor's documented reassessment.
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cleared_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    clearance_note: Mapped[str | None] = mapped_column(Text)


class EligibilityDecision(Base):
    """One evaluation: the rule-set version, the inputs it saw, every rule that fired."""

    __tablename__ = "eligibility_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("episodes.id"), index=True)
    consultation_id: Mapped[int] = mapped_column(ForeignKey("consultations.id"))
    screening_id: Mapped[int | None] = mapped_column(ForeignKey("red_flag_screenings.id"))
    ruleset_version: Mapped[str] = mapped_column(String(20))
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON)
    decision: Mapped[str] = mapped_column(String(20))
    fired: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    excluded_levels: Mapped[list[str]] = mapped_column(JSON, default=list)
    red_flag: Mapped[bool] = mapped_column(Boolean, default=False)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    overridden_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    overridden_by_name: Mapped[str | None] = mapped_column(String(200))
    override_justification: Mapped[str | None] = mapped_column(Text)
    overridden_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def effective_eligible(self) -> bool:
        return self.decision == "eligible" or (self.overridden_at is not None and not self.red_flag)
