"""Pure hash-chain rules for the audit log: how a record is hashed and how a chain is checked."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

GENESIS_HASH = "0" * 64


@dataclass(frozen=True, kw_only=True)
class RecordContent:
    """What one record says, before it takes its place in the chain."""

    actor_user_id: int | None
    actor_username: str
    actor_role: str
    action: str
    entity_type: str
    entity_id: str
    patient_id: int | None
    source_ip: str
    outcome: str
    detail: str


@dataclass(frozen=True, kw_only=True)
class ChainEntry(RecordContent):
    """A record in its place: its number, time and the hashes that link it."""

    seq: int
    at: datetime
    prev_hash: str
    hash: str
    row_id: int | None = None


def canonical_payload(entry: ChainEntry) -> str:
    """Every field that matters, in a fixed order; timestamps to the microsecond in UTC."""
    fields: list[Any] = [
        entry.seq,
        entry.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        entry.actor_user_id,
        entry.actor_username,
        entry.actor_role,
        entry.action,
        entry.entity_type,
        entry.entity_id,
        entry.patient_id,
        entry.source_ip,
        entry.outcome,
        entry.detail,
    ]
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


def compute_hash(prev_hash: str, entry: ChainEntry) -> str:
    digest = hashlib.sha256()
    # utf-8, not ascii: a tampered prev_hash must fail verification, not crash it.
    digest.update(prev_hash.encode("utf-8"))
    digest.update(b"\n")
    digest.update(canonical_payload(entry).encode("utf-8"))
    return digest.hexdigest()


class BreakKind(StrEnum):
    EDITED = "edited"  # the record's content no longer matches its own hash
    MISSING = "missing"  # a sequence number is absent: a record was deleted
    INSERTED = "inserted"  # a record appears that the chain does not lead to
    REORDERED = "reordered"  # records are valid but out of their original order
    BROKEN_LINK = "broken_link"  # the link to the previous record does not match


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    row_id: int | None
    kind: BreakKind
    explanation: str


@dataclass(frozen=True)
class VerifyResult:
    records: int
    head_hash: str
    first_break: ChainBreak | None

    @property
    def intact(self) -> bool:
        return self.first_break is None


def verify_chain(entries: Iterable[ChainEntry]) -> VerifyResult:
    """Walks entries in sequence order and reports the first broken link."""
    expected_seq = 1
    prev_hash = GENESIS_HASH
    count = 0
    seen_hashes: dict[str, int] = {}
    for entry in entries:
        count += 1
        if compute_hash(entry.prev_hash, entry) != entry.hash:
            return VerifyResult(
                count,
                prev_hash,
                ChainBreak(
                    entry.seq,
                    entry.row_id,
                    BreakKind.EDITED,
                    f"record {entry.seq} was changed after it was written",
                ),
            )
        if entry.seq != expected_seq:
            if entry.seq > expected_seq:
                kind, why = (
                    BreakKind.MISSING,
                    (f"records {expected_seq}..{entry.seq - 1} are missing (deleted)"),
                )
            else:
                kind, why = BreakKind.INSERTED, f"record {entry.seq} appears twice or out of place"
            return VerifyResult(count, prev_hash, ChainBreak(entry.seq, entry.row_id, kind, why))
        if entry.prev_hash != prev_hash:
            if entry.prev_hash in seen_hashes:
                kind, why = (
                    BreakKind.REORDERED,
                    (
                        f"record {entry.seq} follows record {seen_hashes[entry.prev_hash]} "
                        "in the original chain: records were reordered"
                    ),
                )
            else:
                kind, why = (
                    BreakKind.INSERTED,
                    (
                        f"record {entry.seq} does not link to record {entry.seq - 1}: "
                        "a record was inserted or replaced"
                    ),
                )
            return VerifyResult(count, prev_hash, ChainBreak(entry.seq, entry.row_id, kind, why))
        seen_hashes[entry.hash] = entry.seq
        prev_hash = entry.hash
        expected_seq += 1
    return VerifyResult(count, prev_hash, None)
