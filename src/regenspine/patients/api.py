"""JSON API for patients; the same services as the pages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from regenspine.auth.actor import Actor
from regenspine.auth.permissions import Permission
from regenspine.patients import service
from regenspine.patients.schemas import (
    AmendmentPublic,
    CareTeamAdd,
    PatientAmend,
    PatientCreate,
    PatientPublic,
    PatientSearchPage,
    PatientSummary,
)
from regenspine.web.answers import model_json
from regenspine.web.boundary import reads_only, run_statements
from regenspine.web.openapi import RowId, responses
from regenspine.web.security import ApiActor, Db, requires

router = APIRouter(
    prefix="/patients", tags=["patients"], dependencies=[requires(Permission.PATIENT_READ)]
)
REFUSALS = responses(401, 403)
NOT_FOUND = responses(404)
INVALID = responses(422)


@router.get("", response_model=PatientSearchPage, responses=REFUSALS | INVALID)
@reads_only
async def search(
    db: Db,
    actor: ApiActor,
    q: Annotated[str, Query(max_length=100)] = "",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    return model_json(await run_statements(db, _search, db, actor, q, page))


def _search(db: Session, actor: Actor, q: str, page: int) -> PatientSearchPage:
    result = service.search_patients(db, actor, q, page)
    return PatientSearchPage(
        items=[PatientSummary.model_validate(p) for p in result.patients],
        total=result.total,
        page=result.page,
        page_size=result.page_size,
        pages=result.pages,
    )


@router.post(
    "",
    response_model=PatientPublic,
    status_code=201,
    responses=REFUSALS | INVALID | responses(409),
)
def register(body: PatientCreate, db: Db, actor: ApiActor) -> PatientPublic:
    raw = body.model_dump(exclude={"confirm_not_duplicate"})
    patient = service.register_patient(
        db, actor, raw, confirm_not_duplicate=body.confirm_not_duplicate
    )
    return PatientPublic.model_validate(patient)


@router.get("/{patient_id}", response_model=PatientPublic, responses=REFUSALS | NOT_FOUND)
@reads_only
async def read(patient_id: RowId, db: Db, actor: ApiActor) -> Response:
    return model_json(await run_statements(db, _chart, db, actor, patient_id))


def _chart(db: Session, actor: Actor, patient_id: int) -> PatientPublic:
    return PatientPublic.model_validate(service.get_patient(db, actor, patient_id))


@router.get(
    "/{patient_id}/amendments",
    response_model=list[AmendmentPublic],
    responses=REFUSALS | NOT_FOUND,
)
def amendments(patient_id: RowId, db: Db, actor: ApiActor) -> list[AmendmentPublic]:
    patient = service.get_patient(db, actor, patient_id, purpose="read_history")
    return [
        AmendmentPublic.model_validate(a) for a in service.amendment_history(db, actor, patient)
    ]


@router.post(
    "/{patient_id}/amendments",
    response_model=list[AmendmentPublic],
    status_code=201,
    responses=REFUSALS | NOT_FOUND | INVALID | responses(409),
)
def amend(patient_id: RowId, body: PatientAmend, db: Db, actor: ApiActor) -> list[AmendmentPublic]:
    rows = service.amend_patient(
        db, actor, patient_id, dict(body.changes), body.reason, body.expected_version
    )
    return [AmendmentPublic.model_validate(a) for a in rows]


@router.post(
    "/{patient_id}/care-team",
    status_code=204,
    responses=REFUSALS | NOT_FOUND | INVALID,
)
def add_care_team_member(patient_id: RowId, body: CareTeamAdd, db: Db, actor: ApiActor) -> Response:
    service.add_to_care_team(db, actor, patient_id, body.user_id)
    return Response(status_code=204)
