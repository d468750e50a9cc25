"""Appending to, searching and verifying the audit log; appends join the caller's transaction."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, TypedDict, Unpack

from sqlalchemy import Select, func, insert, select
from sqlalchemy.orm import Session

from regenspine.audit import chain
from regenspine.audit.chain import (
    GENESIS_HASH,
    ChainEntry,
    RecordContent,
    VerifyResult,
    compute_hash,
    verify_chain,
)
from regenspine.audit.models import AuditRecord
from regenspine.auth.actor import Actor
from regenspine.auth.permissions import Permission
from regenspine.db import deferred_work, serialise_appends, utcnow
from regenspine.errors import N_, Message, RefusalRecord, TooManyAttempts


class Outcome(StrEnum):
    SUCCESS = "success"
    REFUSED = "refused"
    FAILURE = "failure"


# One record's content, waiting to be appended (see append).
PendingAppend = RecordContent


class RecordFields(TypedDict, total=False):
    """What a record says besides who acted and the action; all optional."""

    entity_type: str
    entity_id: str | int
    patient_id: int | None
    outcome: Outcome
    detail: Mapping[str, Any] | None


def pending_append(actor: Actor, action: str, **fields: Unpack[RecordFields]) -> PendingAppend:
    return PendingAppend(
        actor_user_id=actor.user_id,
        actor_username=actor.username,
        actor_role=str(actor.role or ""),
        action=action,
        entity_type=fields.get("entity_type", ""),
        entity_id=str(fields.get("entity_id", "")),
        patient_id=fields.get("patient_id"),
        source_ip=actor.source_ip,
        outcome=str(fields.get("outcome", Outcome.SUCCESS)),
        detail=json.dumps(
            dict(fields.get("detail") or {}), ensure_ascii=False, sort_keys=True, default=str
        ),
    )


def record(session: Session, actor: Actor, action: str, **fields: Unpack[RecordFields]) -> None:
    """Append one record to the chain inside the caller's transaction.

    In a read-only transaction (a read the web boundary opened without the write lock) the
    record is handed to the boundary instead, which appends it in a write transaction of its
    own that commits before the request is answered."""
    pending = pending_append(actor, action, **fields)
    work = deferred_work(session)
    if work is not None:
        work.appends.append(pending)
    else:
        append(session, [pending])


def append(session: Session, pending: Sequence[PendingAppend]) -> None:
    """Chains the records in order after the current head, in one statement; the caller's
    transaction holds the chain's lock from here until it commits."""
    if not pending:
        return
    serialise_appends(session, "audit_records")
    head = session.execute(
        select(AuditRecord.seq, AuditRecord.hash).order_by(AuditRecord.seq.desc()).limit(1)
    ).first()
    seq, prev_hash = (head.seq, head.hash) if head else (0, GENESIS_HASH)
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for item in pending:
        seq += 1
        entry = ChainEntry(seq=seq, at=now, **vars(item), prev_hash=prev_hash, hash="")
        digest = compute_hash(prev_hash, entry)
        rows.append({k: v for k, v in vars(entry).items() if k != "row_id"} | {"hash": digest})
        prev_hash = digest
    session.execute(insert(AuditRecord), rows)


@dataclass(frozen=True)
class PendingRecord:
    action: str
    entity_type: str = ""
    entity_id: str | int = ""
    patient_id: int | None = None
    detail: Mapping[str, Any] | None = None


def record_many(session: Session, actor: Actor, pending: Sequence[PendingRecord]) -> int:
    """Appends many records in one statement (bulk loads); same chain rules as record()."""
    append(
        session,
        [
            pending_append(
                actor,
                item.action,
                entity_type=item.entity_type,
                entity_id=item.entity_id,
                patient_id=item.patient_id,
                detail=item.detail,
            )
            for item in pending
        ],
    )
    return len(pending)


def to_entry(row: AuditRecord) -> ChainEntry:
    return ChainEntry(
        seq=row.seq,
        at=row.at,
        actor_user_id=row.actor_user_id,
        actor_username=row.actor_username,
        actor_role=row.actor_role,
        action=row.action,
        entity_type=row.entity_type,
        entity_id=row.entity_id,
        patient_id=row.patient_id,
        source_ip=row.source_ip,
        outcome=row.outcome,
        detail=row.detail,
        prev_hash=row.prev_hash,
        hash=row.hash,
        row_id=row.id,
    )


def verify(session: Session) -> VerifyResult:
    rows = session.execute(
        select(AuditRecord).order_by(AuditRecord.seq).execution_options(yield_per=2000)
    ).scalars()
    return verify_chain(to_entry(row) for row in rows)


@dataclass(frozen=True)
class UseLimit:
    """How often one account may run a costly use of the log: each reads the whole log (or a
    large part of it), so without a limit one account could keep the database busy for
    everyone (ASVS V2.4.1). Counted from the log itself, so every process and machine
    serving the clinic shares the count."""

    action: str
    times: int
    window: timedelta


VERIFY_LIMIT = UseLimit("audit.verify", times=5, window=timedelta(minutes=15))
EXPORT_LIMIT = UseLimit("audit.export", times=20, window=timedelta(minutes=15))


def _within_limit(session: Session, actor: Actor, limit: UseLimit) -> None:
    since = utcnow() - limit.window
    used = session.scalar(
        select(func.count(AuditRecord.id)).where(
            AuditRecord.action == limit.action,
            AuditRecord.actor_user_id == actor.user_id,
            AuditRecord.outcome == Outcome.SUCCESS,
            AuditRecord.at > since,
        )
    )
    if (used or 0) >= limit.times:
        raise TooManyAttempts(
            Message(
                N_(
                    "This can be done %(times)s times in %(minutes)s minutes, and that many "
                    "have been done. Try again later."
                ),
                times=limit.times,
                minutes=int(limit.window.total_seconds() // 60),
            ),
            refusal=RefusalRecord(
                action=limit.action, entity_type="audit_log", detail={"reason": "rate_limited"}
            ),
        )


def verify_for(
    session: Session, actor: Actor, head: chain.WrittenHead | None = None
) -> VerifyResult:
    """An auditor's check of the whole chain, and with `head` that it still leads to a head
    written down earlier; itself recorded in the log (after the records it checked) with the
    result of all of it."""
    actor.require(Permission.AUDIT_READ)
    _within_limit(session, actor, VERIFY_LIMIT)
    # The account asking exists, and its creation was recorded: an empty log was emptied.
    result = chain.check_not_emptied(verify(session), database_holds_records=True)
    if head is not None:
        result = chain.check_head(result, head)
    brk = result.first_break
    record(
        session,
        actor,
        VERIFY_LIMIT.action,
        entity_type="audit_log",
        detail={"intact": result.intact, "records": result.records}
        | ({"first_break_seq": brk.seq} if brk else {}),
    )
    return result


@dataclass(frozen=True)
class AuditFilter:
    patient_id: int | None = None
    username: str | None = None
    action: str | None = None
    date_from: date | None = None
    date_to: date | None = None


def _filtered(query: Select[Any], flt: AuditFilter) -> Select[Any]:
    if flt.patient_id is not None:
        query = query.where(AuditRecord.patient_id == flt.patient_id)
    if flt.username:
        query = query.where(AuditRecord.actor_username == flt.username.strip().lower())
    if flt.action:
        query = query.where(AuditRecord.action.startswith(flt.action.strip()))
    if flt.date_from:
        query = query.where(AuditRecord.at >= datetime.combine(flt.date_from, time(), UTC))
    if flt.date_to and flt.date_to < date.max:  # "to 9999-12-31" is no upper bound at all
        end = datetime.combine(flt.date_to + timedelta(days=1), time(), UTC)
        query = query.where(AuditRecord.at < end)
    return query


@dataclass(frozen=True)
class AuditPage:
    records: list[AuditRecord]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


PAGE_SIZE = 50


def search(
    session: Session, actor: Actor, flt: AuditFilter, page: int = 1, page_size: int = PAGE_SIZE
) -> AuditPage:
    actor.require(Permission.AUDIT_READ)
    page = max(1, page)
    total = session.scalar(_filtered(select(func.count(AuditRecord.id)), flt)) or 0
    rows = session.scalars(
        _filtered(select(AuditRecord), flt)
        .order_by(AuditRecord.seq.desc())
        .offset((page - 1) * page_size)
        .limit(page_size)
    ).all()
    record(
        session,
        actor,
        "audit.search",
        entity_type="audit_log",
        detail={k: v for k, v in vars(flt).items() if v is not None} | {"page": page},
    )
    return AuditPage(list(rows), total, page, page_size)


CSV_COLUMNS = [
    "seq",
    "at",
    "actor_username",
    "actor_role",
    "action",
    "entity_type",
    "entity_id",
    "patient_id",
    "source_ip",
    "outcome",
    "detail",
    "prev_hash",
    "hash",
]


# Rows read per statement while an export streams: each page is a short read of its own.
EXPORT_PAGE_ROWS = 2000


@dataclass(frozen=True)
class AuditExport:
    """An export the auditor was allowed, and the log as it stood then: the records up to
    `upto_seq`. The log is append-only, so reading them later, page by page, gives exactly
    that snapshot however long the download takes."""

    flt: AuditFilter
    upto_seq: int


def export_csv(session: Session, actor: Actor, flt: AuditFilter) -> AuditExport:
    """Allows and records an export of the filtered log; `csv_lines` then reads it."""
    actor.require(Permission.AUDIT_EXPORT)
    _within_limit(session, actor, EXPORT_LIMIT)
    upto = session.scalar(select(func.max(AuditRecord.seq))) or 0
    record(
        session,
        actor,
        EXPORT_LIMIT.action,
        entity_type="audit_log",
        detail={k: v for k, v in vars(flt).items() if v is not None} | {"upto_seq": upto},
    )
    return AuditExport(flt, upto)


def csv_lines(read: Callable[[], Session], export: AuditExport) -> Iterator[str]:
    """The export as CSV lines, oldest first, with the hashes so a reader can re-check the
    chain. Rows are read EXPORT_PAGE_ROWS at a time, each page in a short read-only session
    from `read`, so memory stays flat and no transaction stays open for the download."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(values: Sequence[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    yield line(CSV_COLUMNS)
    columns = [getattr(AuditRecord, c) for c in CSV_COLUMNS]
    after = 0
    while True:
        with read() as session:
            rows = session.execute(
                _filtered(select(*columns), export.flt)
                .where(AuditRecord.seq > after, AuditRecord.seq <= export.upto_seq)
                .order_by(AuditRecord.seq)
                .limit(EXPORT_PAGE_ROWS)
            ).all()
        for row in rows:
            values = list(row)
            values[1] = row.at.isoformat()
            yield line(["" if v is None else _csv_safe(str(v)) for v in values])
        if len(rows) < EXPORT_PAGE_ROWS:
            return
        after = rows[-1].seq


def _csv_safe(value: str) -> str:
    # Spreadsheet programs execute cells that start with these characters (CSV injection).
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
