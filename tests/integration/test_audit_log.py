"""The audit log on both databases: same-transaction writes, tamper detection, concurrency."""

from __future__ import annotations

import json
import threading
from datetime import date

import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from regenspine.audit import service as audit
from regenspine.audit.chain import BreakKind
from regenspine.audit.models import AuditRecord
from regenspine.auth.actor import SYSTEM_ACTOR
from regenspine.auth.permissions import Role
from regenspine.config import get_settings
from regenspine.db import unit_of_work
from regenspine.patients import service as patients
from regenspine.patients.models import Patient
from tests.conftest import person, valid_patient


def _count(factory, model) -> int:
    with factory() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def test_registration_and_its_audit_record_are_committed_together(factory, staff):
    with unit_of_work(factory) as s:
        p = patients.register_patient(s, staff.actor_by("coordinator"), valid_patient())
        pid = p.id
    with factory() as s:
        rows = s.scalars(select(AuditRecord).where(AuditRecord.patient_id == pid)).all()
    assert [r.action for r in rows] == ["patient.create"]
    assert rows[0].actor_username == "coordinator"
    assert rows[0].source_ip == "127.0.0.1"


def test_a_rolled_back_registration_leaves_no_audit_record(factory, staff):
    before = _count(factory, AuditRecord)
    with pytest.raises(RuntimeError), unit_of_work(factory) as s:
        patients.register_patient(s, staff.actor_by("coordinator"), valid_patient())
        raise RuntimeError("power cut before commit")
    assert _count(factory, Patient) == 0
    assert _count(factory, AuditRecord) == before


def _seed(factory, n: int = 6) -> None:
    with unit_of_work(factory) as s:
        for i in range(n):
            audit.record(s, SYSTEM_ACTOR, "test.event", entity_type="t", entity_id=i)


TAMPERING = {
    "edited": (
        "UPDATE audit_records SET actor_username = 'mallory' WHERE seq = 3",
        3,
        BreakKind.EDITED,
    ),
    "deleted": ("DELETE FROM audit_records WHERE seq = 3", 4, BreakKind.MISSING),
    "reordered": (
        "UPDATE audit_records SET seq = CASE seq WHEN 3 THEN 4 ELSE 3 END WHERE seq IN (3, 4)",
        3,
        BreakKind.EDITED,
    ),
    "inserted": (
        "UPDATE audit_records SET seq = seq + 100 WHERE seq >= 4",
        4,
        None,
    ),
}


@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_audit_verify_finds_the_first_tampered_record(factory, kind):
    _seed(factory)
    sql, expected_seq, expected_kind = TAMPERING[kind]
    with factory() as s:
        if kind == "reordered":
            # A unique column cannot swap two values in one statement; go through a gap.
            s.execute(text("UPDATE audit_records SET seq = -3 WHERE seq = 3"))
            s.execute(text("UPDATE audit_records SET seq = 3 WHERE seq = 4"))
            s.execute(text("UPDATE audit_records SET seq = 4 WHERE seq = -3"))
        elif kind == "inserted":
            s.execute(text(sql))
            head = s.execute(select(AuditRecord).where(AuditRecord.seq == 3)).scalar_one()
            s.execute(
                text(
                    "INSERT INTO audit_records (seq, at, actor_user_id, actor_username, "
                    "actor_role, action, entity_type, entity_id, patient_id, source_ip, "
                    "outcome, detail, prev_hash, hash) VALUES (4, :at, NULL, 'mallory', '', "
                    "'test.event', 't', 'forged', NULL, '', 'success', '{}', :prev, :hash)"
                ),
                {"at": head.at.replace(tzinfo=None), "prev": "f" * 64, "hash": "e" * 64},
            )
        else:
            s.execute(text(sql))
        s.commit()
    with factory() as s:
        result = audit.verify(s)
    assert not result.intact
    assert result.first_break is not None
    assert result.first_break.seq == expected_seq
    if expected_kind is not None:
        assert result.first_break.kind == expected_kind


def test_audit_verify_command_exits_non_zero_and_names_the_broken_record(
    factory, database_url, monkeypatch
):
    from regenspine.cli import app as cli

    _seed(factory)
    monkeypatch.setenv("REGENSPINE_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        ok = CliRunner().invoke(cli, ["audit", "verify"])
        assert ok.exit_code == 0, ok.output
        assert "intact" in ok.output and "Head hash" in ok.output
        with factory() as s:
            s.execute(text("UPDATE audit_records SET detail = '{\"x\": 1}' WHERE seq = 2"))
            s.commit()
        broken = CliRunner().invoke(cli, ["audit", "verify"])
        assert broken.exit_code == 1
        assert "record 2" in broken.output
    finally:
        get_settings.cache_clear()


def test_concurrent_appends_from_many_threads_never_fork_the_chain(factory):
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(10):
                with unit_of_work(factory) as s:
                    audit.record(s, SYSTEM_ACTOR, "test.concurrent", entity_id=f"{n}-{i}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with factory() as s:
        seqs = s.scalars(select(AuditRecord.seq).order_by(AuditRecord.seq)).all()
        result = audit.verify(s)
    assert seqs == list(range(1, 41))
    assert result.intact, result.first_break


def test_checking_the_chain_is_recorded_and_limited_per_account(app, staff, factory):
    """ASVS V16.2.1 / V2.4.1: a check of the chain reads the whole log, so it is recorded
    (who checked, and what they found) and an account may run it 5 times in 15 minutes;
    the sixth is refused with 429 and recorded as refused, and another account may still
    check."""
    from regenspine.auth.permissions import Role
    from tests.conftest import sign_in

    _seed(factory, 3)
    auditor = sign_in(app, staff.username(Role.AUDITOR))
    answers = [auditor.get("/api/v1/audit/verify") for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert all(a.json()["intact"] for a in answers[:5])
    assert "5 times in 15 minutes" in answers[5].json()["detail"]
    assert (
        sign_in(app, staff.username(Role.MEDICAL_DIRECTOR)).get("/api/v1/audit/verify").status_code
        == 200
    )
    with factory() as s:
        checks = s.scalars(
            select(AuditRecord)
            .where(AuditRecord.action == "audit.verify")
            .order_by(AuditRecord.seq)
        ).all()
        assert audit.verify(s).intact
    assert [(r.actor_username, r.outcome) for r in checks] == [
        (staff.username(Role.AUDITOR), "success")
    ] * 5 + [
        (staff.username(Role.AUDITOR), "refused"),
        (staff.username(Role.MEDICAL_DIRECTOR), "success"),
    ]
    found = [json.loads(r.detail) for r in checks]
    # Each check says what it found: every record before its own.
    assert [(f["intact"], f["records"]) for f in found[:5]] == [
        (True, r.seq - 1) for r in checks[:5]
    ]


def test_an_export_is_the_log_as_it_stood_and_is_read_in_pages(factory, staff, monkeypatch):
    """The CSV export streams the records up to the log's head when it was asked for, a page
    at a time (memory stays flat for a log of millions of records): records appended while it
    downloads are not in it, every record before is, in order, with hashes that re-check."""
    from regenspine.audit.chain import GENESIS_HASH
    from regenspine.db import DeferredWork, read_only_session

    _seed(factory, 7)
    auditor = staff.actor_by("auditor")
    with unit_of_work(factory) as s:
        export = audit.export_csv(s, auditor, audit.AuditFilter())
    monkeypatch.setattr(audit, "EXPORT_PAGE_ROWS", 2)
    pages: list[int] = []

    def read():
        pages.append(len(pages))
        return read_only_session(factory, DeferredWork())

    lines = audit.csv_lines(read, export)
    header, first = next(lines), next(lines)
    _seed(factory, 3)  # appended while the export downloads
    rows = [first, *lines]
    assert header.startswith("seq,at,actor_username")
    seqs = [int(r.split(",")[0]) for r in rows]
    assert seqs == list(range(1, export.upto_seq + 1))
    assert len(pages) == export.upto_seq // 2 + 1  # pages of 2, the last one short
    prev = GENESIS_HASH
    for row in rows:
        *_, prev_hash, digest = row.strip().split(",")
        assert prev_hash == prev
        prev = digest
    with factory() as s:
        assert s.scalar(select(func.max(AuditRecord.seq))) == export.upto_seq + 1 + 3


def test_an_account_may_export_the_log_20_times_in_15_minutes(factory, staff):
    from regenspine.errors import TooManyAttempts

    auditor = staff.actor_by("auditor")
    for _ in range(20):
        with unit_of_work(factory) as s:
            audit.export_csv(s, auditor, audit.AuditFilter(action="test."))
    with pytest.raises(TooManyAttempts), unit_of_work(factory) as s:
        audit.export_csv(s, auditor, audit.AuditFilter())
    with unit_of_work(factory) as s:  # another account is not held up
        audit.export_csv(s, staff.actor_by("medical_director"), audit.AuditFilter())


def test_an_auditor_filters_the_log_by_the_record_number_on_the_chart(clients, staff, factory):
    """The filter took only the log's internal patient number, which appears on no chart; a
    record number was refused and the whole log shown (and exported) as if unfiltered."""
    with unit_of_work(factory) as s:
        one = patients.register_patient(s, staff.actor(Role.COORDINATOR), valid_patient())
        other = patients.register_patient(
            s,
            staff.actor(Role.COORDINATOR),
            person("Anna", "Nowak", date(1971, 6, 2), 44, "female"),
        )
        mrn, other_mrn = one.mrn, other.mrn
    auditor = clients(Role.AUDITOR)

    page = auditor.get("/audit", params={"patient_id": mrn.lower()})
    assert page.status_code == 200, page.text[:300]
    assert mrn in page.text and other_mrn not in page.text
    assert auditor.get("/audit", params={"patient_id": str(one.id)}).text.count(mrn) >= 1

    wrong = mrn[:-1] + ("A" if mrn[-1] != "A" else "B")  # a check character that fails
    refused = auditor.get("/audit", params={"patient_id": wrong})
    assert refused.status_code == 422
    assert "No patient has this record number" in refused.text
    assert mrn not in refused.text and other_mrn not in refused.text
    export = auditor.get("/audit/export.csv", params={"patient_id": wrong})
    assert export.status_code == 422
    assert not export.headers["content-type"].startswith("text/csv")
