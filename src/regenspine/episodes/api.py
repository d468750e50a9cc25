"""JSON API for treatment episodes: open, read with timeline, take a step, work list."""

from __future__ import annotations

from fastapi import APIRouter, Response

from regenspine.auth.actor import Actor
from regenspine.auth.fields import clinical_text, withheld_fields
from regenspine.auth.permissions import Permission
from regenspine.episodes import documents, service
from regenspine.episodes.schemas import (
    EpisodeCreate,
    EpisodeDetail,
    EpisodeEventPublic,
    EpisodePublic,
    StepRequest,
    WorkItemPublic,
)
from regenspine.web.openapi import RowId, responses
from regenspine.web.security import ApiActor, Db, requires

router = APIRouter(tags=["episodes"], dependencies=[requires(Permission.EPISODE_READ)])
REFUSALS = responses(401, 403)


def detail(db: Db, actor: Actor, episode: service.Episode) -> EpisodeDetail:
    timeline = service.timeline(db, episode)
    events = [
        EpisodeEventPublic.model_validate(e).model_copy(
            update={"reason": clinical_text(actor, "episode_event", "reason", e.reason)}
        )
        for e in timeline
    ]
    withheld = withheld_fields(
        actor, {"events.reason": next((e.reason for e in timeline if e.reason), None)}
    )
    return EpisodeDetail.model_validate(
        EpisodePublic.model_validate(episode).model_dump()
        | {"events": events, "withheld": withheld}
    )


@router.post(
    "/patients/{patient_id}/episodes",
    response_model=EpisodeDetail,
    status_code=201,
    responses=REFUSALS | responses(404, 409, 422),
)
def open_episode(patient_id: RowId, body: EpisodeCreate, db: Db, actor: ApiActor) -> EpisodeDetail:
    episode = service.open_episode(db, actor, patient_id, body.condition_code, body.region)
    return detail(db, actor, episode)


@router.get(
    "/patients/{patient_id}/episodes",
    response_model=list[EpisodePublic],
    responses=REFUSALS | responses(404),
)
def patient_episodes(patient_id: RowId, db: Db, actor: ApiActor) -> list[EpisodePublic]:
    service.patients.get_patient(db, actor, patient_id, purpose="read_episodes")
    return [
        EpisodePublic.model_validate(e) for e in service.episodes_of_patient(db, actor, patient_id)
    ]


@router.get(
    "/episodes/{episode_id}", response_model=EpisodeDetail, responses=REFUSALS | responses(404)
)
def read_episode(episode_id: RowId, db: Db, actor: ApiActor) -> EpisodeDetail:
    episode = service.get_episode(db, actor, episode_id)
    service.audit.record(
        db,
        actor,
        "episode.read",
        entity_type="episode",
        entity_id=episode.id,
        patient_id=episode.patient_id,
    )
    return detail(db, actor, episode)


@router.post(
    "/episodes/{episode_id}/steps",
    response_model=EpisodeDetail,
    status_code=201,
    responses=REFUSALS | responses(404, 409, 422),
)
def take_step(episode_id: RowId, body: StepRequest, db: Db, actor: ApiActor) -> EpisodeDetail:
    service.take_step(
        db,
        actor,
        episode_id,
        body.step,
        body.target,
        reason=body.reason,
        expected_state=body.expected_state,
    )
    return detail(db, actor, service.get_episode(db, actor, episode_id))


PDF = {200: {"description": "PDF document", "content": {"application/pdf": {}}}}


@router.get(
    "/episodes/{episode_id}/urgent-referral.pdf",
    response_class=Response,
    responses=REFUSALS | PDF | responses(404, 409),
)
def urgent_referral_pdf(episode_id: RowId, db: Db, actor: ApiActor, lang: str = "pl") -> Response:
    language = lang if lang in ("pl", "en") else "pl"
    return Response(
        documents.urgent_referral_letter(db, actor, episode_id, language),
        media_type="application/pdf",
    )


@router.get(
    "/episodes/{episode_id}/consent.pdf",
    response_class=Response,
    responses=REFUSALS | PDF | responses(404, 409),
)
def consent_pdf(episode_id: RowId, db: Db, actor: ApiActor) -> Response:
    return Response(documents.signed_consent(db, actor, episode_id), media_type="application/pdf")


@router.get("/worklist", response_model=list[WorkItemPublic], responses=REFUSALS)
def work_list(db: Db, actor: ApiActor) -> list[WorkItemPublic]:
    return [
        WorkItemPublic(
            episode=EpisodePublic.model_validate(w.episode),
            patient_name=w.patient_name,
            mrn=w.mrn,
            why=w.why,
            urgent=w.urgent,
        )
        for w in service.work_list(db, actor)
    ]
