"""JSON API for auditors: search, CSV export and chain verification."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from regenspine.audit import service
from regenspine.audit.schemas import AuditPagePublic, AuditRecordPublic, ChainStatus
from regenspine.auth.permissions import Permission
from regenspine.web.openapi import ROW_ID_MAX, Responses, responses
from regenspine.web.security import ApiActor, Db, requires

router = APIRouter(prefix="/audit", tags=["audit"], dependencies=[requires(Permission.AUDIT_READ)])
REFUSALS = responses(401, 403)
CSV_RESPONSE: Responses = {200: {"description": "The log as CSV", "content": {"text/csv": {}}}}


def audit_filter(
    patient_id: Annotated[int | None, Query(ge=1, le=ROW_ID_MAX)] = None,
    username: Annotated[str | None, Query(max_length=150)] = None,
    action: Annotated[str | None, Query(max_length=80)] = None,
    date_from: date | None = None,
    date_to: date | None = None,
) -> service.AuditFilter:
    return service.AuditFilter(patient_id, username, action, date_from, date_to)


Filter = Annotated[service.AuditFilter, Depends(audit_filter)]


@router.get("/records", response_model=AuditPagePublic, responses=REFUSALS)
def records(
    db: Db,
    actor: ApiActor,
    flt: Filter,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> AuditPagePublic:
    result = service.search(db, actor, flt, page)
    return AuditPagePublic(
        items=[AuditRecordPublic.model_validate(r) for r in result.records],
        total=result.total,
        page=result.page,
        pages=result.pages,
    )


@router.get("/records.csv", responses=REFUSALS | CSV_RESPONSE, response_class=StreamingResponse)
def records_csv(db: Db, actor: ApiActor, flt: Filter) -> StreamingResponse:
    return csv_response(service.export_csv(db, actor, flt))


def csv_response(lines: Iterator[str]) -> StreamingResponse:
    return StreamingResponse(
        lines,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="audit-log.csv"'},
    )


@router.get("/verify", response_model=ChainStatus, responses=REFUSALS)
def verify(db: Db, actor: ApiActor) -> ChainStatus:
    actor.require(Permission.AUDIT_READ)
    result = service.verify(db)
    brk = result.first_break
    return ChainStatus(
        intact=result.intact,
        records=result.records,
        head_hash=result.head_hash,
        first_break_seq=brk.seq if brk else None,
        first_break_kind=str(brk.kind) if brk else None,
        explanation=brk.explanation if brk else None,
    )
