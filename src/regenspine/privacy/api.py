"""JSON API for patients' data-rights requests (medical director / data protection)."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from regenspine.auth.permissions import Permission
from regenspine.privacy import service
from regenspine.reports.pdf import render_pdf
from regenspine.web.openapi import RowId, responses
from regenspine.web.security import ApiActor, Db, FromTheClinic, requires

router = APIRouter(tags=["privacy"], dependencies=[requires(Permission.PRIVACY_MANAGE)])
REFUSALS = responses(401, 403, 404)


class ErasureRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(max_length=2000)


class ErasureResult(BaseModel):
    erased: bool
    keep_until: date
    basis: str
    message: str


@router.get(
    "/patients/{patient_id}/access-export", responses=REFUSALS, dependencies=[FromTheClinic]
)
def access_export(patient_id: RowId, db: Db, actor: ApiActor) -> dict[str, Any]:
    return service.access_export(db, actor, patient_id)


@router.get(
    "/patients/{patient_id}/access-export.pdf",
    response_class=Response,
    responses=REFUSALS | {200: {"content": {"application/pdf": {}}}},
    dependencies=[FromTheClinic],
)
def access_export_pdf(patient_id: RowId, db: Db, actor: ApiActor, lang: str = "pl") -> Response:
    export = service.access_export(db, actor, patient_id)
    language = lang if lang in ("pl", "en") else "pl"
    pdf = render_pdf("reports/access_export.html", {"export": export}, language)
    return Response(pdf, media_type="application/pdf")


@router.post(
    "/patients/{patient_id}/erasure-requests",
    response_model=ErasureResult,
    status_code=201,
    responses=REFUSALS | responses(422),
)
def request_erasure(
    patient_id: RowId, body: ErasureRequest, db: Db, actor: ApiActor
) -> ErasureResult:
    outcome = service.request_erasure(db, actor, patient_id, body.reason)
    return ErasureResult(
        erased=outcome.erased,
        keep_until=outcome.retention.keep_until,
        basis=outcome.retention.basis,
        message=outcome.message.render(),
    )
