"""JSON API for the assessment: consultation + red-flag screening, decisions, override."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from regenspine.auth.actor import Actor
from regenspine.auth.fields import WITHHELD_DESCRIPTION, clinical_text, withheld_fields
from regenspine.auth.permissions import Permission
from regenspine.eligibility import service
from regenspine.eligibility.models import EligibilityDecision
from regenspine.episodes import service as episodes
from regenspine.errors import N_, Message, NotFound
from regenspine.web.openapi import RowId, responses
from regenspine.web.security import ApiActor, Db, requires

router = APIRouter(tags=["eligibility"], dependencies=[requires(Permission.EPISODE_READ)])
REFUSALS = responses(401, 403, 404)


class AssessmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    consultation: dict[str, Any] = Field(
        description="presenting_complaint, pain_weeks, physiotherapy_weeks, prior_treatments, "
        "prior_fusion_levels, medications, anticoagulant, history_cancer, active_malignancy, "
        "active_infection, bleeding_disorder, pregnancy, immunosuppression, bmi, "
        "imaging_modality, imaging_date, level_findings, diagnoses, target_levels"
    )
    red_flags: dict[str, bool] = Field(description="Every red-flag item id → yes (true) / no")
    change_reason: str | None = Field(default=None, max_length=500)
    ruleset_version: str | None = Field(default=None, max_length=20)


class OverrideCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    justification: str = Field(max_length=2000)


class RedFlagClearance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(max_length=2000)


class DecisionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    decision: str
    ruleset_version: str
    inputs: dict[str, Any]
    fired: list[dict[str, Any]]
    excluded_levels: list[str]
    red_flag: bool
    decided_at: datetime
    overridden_by_name: str | None
    override_justification: str | None
    overridden_at: datetime | None
    withheld: list[str] = Field(default_factory=list, description=WITHHELD_DESCRIPTION)

    @classmethod
    def for_actor(cls, actor: Actor, decision: EligibilityDecision) -> DecisionPublic:
        """The decision as ``actor`` may see it: clinical free text withheld by role."""
        text = decision.override_justification
        return cls.model_validate(decision).model_copy(
            update={
                "override_justification": clinical_text(
                    actor, "eligibility_decision", "override_justification", text
                ),
                "withheld": withheld_fields(actor, {"override_justification": text}),
            }
        )


class AssessmentResult(BaseModel):
    episode_state: str
    consultation_version: int
    red_flags_positive: list[str]
    decision: DecisionPublic | None


@router.post(
    "/episodes/{episode_id}/assessment",
    response_model=AssessmentResult,
    status_code=201,
    responses=REFUSALS | responses(409, 422),
)
def assess(episode_id: RowId, body: AssessmentCreate, db: Db, actor: ApiActor) -> AssessmentResult:
    consultation, screening, decision = service.assess(
        db,
        actor,
        episode_id,
        body.consultation,
        body.red_flags,
        change_reason=body.change_reason,
        ruleset_version=body.ruleset_version,
    )
    episode = episodes.get_episode(db, actor, episode_id)
    return AssessmentResult(
        episode_state=episode.state,
        consultation_version=consultation.version,
        red_flags_positive=list(screening.positive),
        decision=DecisionPublic.for_actor(actor, decision) if decision else None,
    )


@router.get("/episodes/{episode_id}/decision", response_model=DecisionPublic, responses=REFUSALS)
def latest_decision(episode_id: RowId, db: Db, actor: ApiActor) -> DecisionPublic:
    episode = episodes.get_episode(db, actor, episode_id)
    decision = episodes.latest_decision(db, episode)
    if decision is None:
        raise NotFound(Message(N_("No decision has been made yet.")))
    service.audit.record(
        db,
        actor,
        "eligibility.read",
        entity_type="eligibility_decision",
        entity_id=decision.id,
        patient_id=episode.patient_id,
    )
    return DecisionPublic.for_actor(actor, decision)


@router.post(
    "/episodes/{episode_id}/override",
    response_model=DecisionPublic,
    status_code=201,
    responses=REFUSALS | responses(409, 422),
)
def override(episode_id: RowId, body: OverrideCreate, db: Db, actor: ApiActor) -> DecisionPublic:
    return DecisionPublic.for_actor(
        actor, service.override(db, actor, episode_id, body.justification)
    )


@router.post(
    "/episodes/{episode_id}/red-flag-clearance",
    status_code=204,
    responses=REFUSALS | responses(409, 422),
)
def clear_red_flag(episode_id: RowId, body: RedFlagClearance, db: Db, actor: ApiActor) -> None:
    service.clear_red_flag(db, actor, episode_id, body.note)
