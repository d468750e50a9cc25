"""JSON API for auditors: search, CSV export and chain verification."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from regenspine.audit import chain, service
from regenspine.audit.schemas import AuditPagePublic, AuditRecordPublic, ChainStatus
from regenspine.auth.actor import Actor
from regenspine.auth.permissions import Permission
from regenspine.db import DeferredWork, deferred_work, read_only_session
from regenspine.errors import InvalidInput, Message
from regenspine.web.boundary import reads_only
from regenspine.web.openapi import ROW_ID_MAX, Responses, responses
from regenspine.web.security import ApiActor, Db, FromTheClinic, requires

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
    dependencies=[FromTheClinic],
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


class ChainHead(ChainStatus):
    """The check's answer with the head's record number and time, to write down outside the
    database and check against later (expect_head)."""

    head_seq: int
    head_at: datetime | None = None


ExpectHead = Annotated[
    str | None,
    Query(
        max_length=100,
        description="A head written down after an earlier check, as `SEQ:HASH` (or the hash "
        "alone): the chain must still lead to it. Records deleted from the end of the log show "
        "no other way.",
    ),
]


@router.get(
    "/verify",
    response_model=ChainHead,
    responses=REFUSALS | responses(422, 429),
    dependencies=[FromTheClinic],
)
@reads_only
async def verify(db: Db, actor: ApiActor, expect_head: ExpectHead = None) -> ChainHead:
    """Checks the whole hash chain (at most 5 times per account in 15 minutes), and with
    `expect_head` that it still leads to a head written down outside the database; the check
    is itself recorded in the log. With an API token the chain is read beside the writers, and
    the check's record is appended afterwards."""
    try:
        head = None if expect_head is None else chain.WrittenHead.parse(expect_head)
    except ValueError:
        raise InvalidInput({"expect_head": Message(chain.WRITTEN_HEAD_FORMAT)}) from None
    # In a worker thread, not on the event loop (run_statements): the walk reads the whole log.
    result = await run_in_threadpool(_verify, db, actor, head)
    brk = result.first_break
    return ChainHead(
        intact=result.intact,
        records=result.records,
        head_hash=result.head_hash,
        head_seq=result.head_seq,
        head_at=result.head_at,
        first_break_seq=brk.seq if brk else None,
        first_break_kind=str(brk.kind) if brk else None,
        explanation=brk.explanation if brk else None,
    )


def _verify(db: Session, actor: Actor, head: chain.WrittenHead | None) -> chain.VerifyResult:
    if deferred_work(db) is None or db.get_bind().dialect.name != "postgresql":
        return service.verify_for(db, actor, head)
    # PostgreSQL's readers run in autocommit, and the walk streams the log through a
    # server-side cursor, which lives only in a transaction: one is opened around it, read-only
    # like every transaction on those connections.
    reader = db.connection().connection.driver_connection
    assert reader is not None
    with reader.transaction():
        return service.verify_for(db, actor, head)
