"""API shapes for episodes and their steps."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from regenspine.auth.fields import WITHHELD_DESCRIPTION
from regenspine.episodes.states import EpisodeState, Step


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EpisodeCreate(Strict):
    condition_code: str = Field(max_length=60)
    region: str = Field(max_length=20, description="lumbar | cervical | thoracic")


class StepRequest(Strict):
    step: Step
    target: EpisodeState
    reason: str | None = Field(default=None, max_length=2000)
    expected_state: EpisodeState | None = Field(
        default=None, description="The state you saw; a different current state is a conflict."
    )


class EpisodeEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    step: str
    from_state: str | None
    to_state: str
    cycle: int
    at: datetime
    actor_name: str
    reason: str | None


class EpisodePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    patient_id: int
    condition_code: str
    region: str
    state: EpisodeState
    cycle: int
    max_cycles: int
    opened_at: datetime
    version: int


class EpisodeDetail(EpisodePublic):
    events: list[EpisodeEventPublic]
    withheld: list[str] = Field(default_factory=list, description=WITHHELD_DESCRIPTION)


class WorkItemPublic(BaseModel):
    episode: EpisodePublic
    patient_name: str
    mrn: str
    why: str
    urgent: bool
