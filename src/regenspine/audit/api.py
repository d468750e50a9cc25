"""JSON API for auditors: search, CSV export and chain verification."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from regenspine.audit import service
from regenspine.audit.schemas import AuditPagePublic, AuditRecordPublic, ChainStatus
from regenspine.auth.permissions import Permission
from regenspine.db import DeferredWork, read_only_session
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


@router.get(
    "/records.csv",
    responses=REFUSALS | CSV_RESPONSE | responses(429),
    response_class=StreamingResponse,
)
def records_csv(request: Request, db: Db, actor: ApiActor, flt: Filter) -> StreamingResponse:
    """The filtered log as CSV (at most 20 exports per account in 15 minutes)."""
    return csv_response(request, service.export_csv(db, actor, flt))


def csv_response(request: Request, export: service.AuditExport) -> StreamingResponse:
    """Streams an export allowed (and recorded) by the request's committed transaction; the
    rows are read afterwards, page by page, on the read-only connections."""
    factory = request.app.state.session_factory
    return StreamingResponse(
        service.csv_lines(lambda: read_only_session(factory, DeferredWork()), export),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="audit-log.csv"'},
    )


@router.get("/verify", response_model=ChainStatus, responses=REFUSALS | responses(429))
def verify(db: Db, actor: ApiActor) -> ChainStatus:
    """Checks the whole hash chain (at most 5 times per account in 15 minutes); the check is
    itself recorded in the log."""
    result = service.verify_for(db, actor)
    brk = result.first_break
    return ChainStatus(
        intact=result.intact,
        records=result.records,
        head_hash=result.head_hash,
        first_break_seq=brk.seq if brk else None,
        first_break_kind=str(brk.kind) if brk else None,
        explanation=brk.explanation if brk else None,
    )
