"""Pure hash-chain rules for the audit log: how a record is hashed and how a chain is checked."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from regenspine.errors import N_

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
    HEAD_MISSING = "head_missing"  # a head written down outside the database is not in the chain


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
    # The last record that verified (0 and None: none did).
    head_seq: int = 0
    head_at: datetime | None = None
    # Every record that verified, by its hash: where a head written down earlier stands now.
    seqs_by_hash: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def intact(self) -> bool:
        return self.first_break is None


def verify_chain(entries: Iterable[ChainEntry]) -> VerifyResult:
    """Walks entries in sequence order and reports the first broken link.

    Records deleted from the end of the log leave a shorter chain that is intact: only a head
    written down outside the database shows them (see check_head)."""
    expected_seq = 1
    prev_hash = GENESIS_HASH
    head_at: datetime | None = None
    count = 0
    seen_hashes: dict[str, int] = {}

    def broken(brk: ChainBreak) -> VerifyResult:
        return VerifyResult(count, prev_hash, brk, expected_seq - 1, head_at, seen_hashes)

    for entry in entries:
        count += 1
        if compute_hash(entry.prev_hash, entry) != entry.hash:
            return broken(
                ChainBreak(
                    entry.seq,
                    entry.row_id,
                    BreakKind.EDITED,
                    f"record {entry.seq} was changed after it was written",
                )
            )
        if entry.seq != expected_seq:
            if entry.seq > expected_seq:
                kind, why = (
                    BreakKind.MISSING,
                    (f"records {expected_seq}..{entry.seq - 1} are missing (deleted)"),
                )
            else:
                kind, why = BreakKind.INSERTED, f"record {entry.seq} appears twice or out of place"
            return broken(ChainBreak(entry.seq, entry.row_id, kind, why))
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
            return broken(ChainBreak(entry.seq, entry.row_id, kind, why))
        seen_hashes[entry.hash] = entry.seq
        prev_hash = entry.hash
        head_at = entry.at
        expected_seq += 1
    return VerifyResult(count, prev_hash, None, expected_seq - 1, head_at, seen_hashes)


WRITTEN_HEAD_FORMAT = N_(
    "Write the head as the record's number, a colon and the hash (64 characters, 0-9 and a-f), "
    "e.g. 41:3f9a…; or as the hash alone."
)


@dataclass(frozen=True)
class WrittenHead:
    """A head of the chain that an auditor wrote down outside the database: its hash, and its
    record's number if they noted it. Nothing kept in the database can show that records were
    deleted from the end of the log (whoever deletes them can rewrite any mark kept beside
    them); a head kept elsewhere can, since the chain must still lead to it."""

    hash: str
    seq: int | None = None

    @classmethod
    def parse(cls, text: str) -> WrittenHead:
        """`SEQ:HASH` as `audit verify` prints it, or the hash alone; ValueError otherwise."""
        match = re.fullmatch(r"\s*(?:(\d{1,18})\s*:\s*)?([0-9a-fA-F]{64})\s*", text)
        if match is None:
            raise ValueError(WRITTEN_HEAD_FORMAT)
        seq, digest = match.groups()
        return cls(digest.lower(), int(seq) if seq else None)

    def __str__(self) -> str:
        return self.hash if self.seq is None else f"{self.seq}:{self.hash}"


def check_head(result: VerifyResult, head: WrittenHead) -> VerifyResult:
    """The result, broken unless the chain still leads to `head`: the record with that hash is
    at its place (the number written down, if any) and every record up to it verified."""
    if not result.intact:
        return result  # the first break comes first, wherever the head is
    found = 0 if head.hash == GENESIS_HASH else result.seqs_by_hash.get(head.hash)
    if found is not None and head.seq in (None, found):
        return result
    short = f"{head.hash[:16]}…"
    if found is not None and head.seq is not None:
        seq, why = (
            head.seq,
            f"the hash written down ({short}) is record {found}'s, not record {head.seq}'s: "
            "check the head that was written down",
        )
    elif head.seq is not None and head.seq <= result.head_seq:
        seq, why = (
            head.seq,
            f"record {head.seq} is not the one written down outside the database "
            f"({short}): the log was rewritten from there on, or replaced by another copy",
        )
    else:
        written = short if head.seq is None else f"record {head.seq}, {short}"
        seq, why = (
            result.head_seq + 1,
            f"the log ends at record {result.head_seq}, and the head written down outside the "
            f"database ({written}) is not in it: records were deleted from the end of the log, "
            "or it was replaced by another copy",
        )
    return replace(result, first_break=ChainBreak(seq, None, BreakKind.HEAD_MISSING, why))


def check_not_emptied(result: VerifyResult, *, database_holds_records: bool) -> VerifyResult:
    """An empty chain verifies; but creating a staff account or registering a patient writes
    an audit record, so an empty log beside them was emptied."""
    if result.records or not database_holds_records:
        return result
    return replace(
        result,
        first_break=ChainBreak(
            1,
            None,
            BreakKind.MISSING,
            "the log is empty, but the database holds staff accounts or patients, whose "
            "creation was recorded: its records were deleted",
        ),
    )
