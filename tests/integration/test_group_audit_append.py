"""Chart reads with an API token: a read-only transaction, then the audit record written in a
group commit with other requests' records, committed before the answer is sent."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError

from regenspine.audit import service as audit
from regenspine.audit.appender import AuditNotRecorded, GroupAppender
from regenspine.audit.models import AuditRecord
from regenspine.auth import service as auth
from regenspine.auth.models import ApiToken
from regenspine.auth.permissions import Permission, Role
from regenspine.db import (
    DeferredWork,
    WriteInReadOnlyTransaction,
    read_only_session,
    unit_of_work,
    utcnow,
)
from regenspine.patients import service as patients
from regenspine.patients.models import Patient
from regenspine.web.boundary import _read_transaction
from tests.conftest import browser_client, valid_patient


def _pending(n: int) -> audit.PendingAppend:
    return audit.PendingAppend(
        actor_user_id=None,
        actor_username="system",
        actor_role="",
        action="patient.read",
        entity_type="patient",
        entity_id=str(n),
        patient_id=None,
        source_ip="127.0.0.1",
        outcome="success",
        detail="{}",
    )


def _work(n: int) -> DeferredWork:
    work = DeferredWork()
    work.appends.append(_pending(n))
    return work


def _records(factory) -> list[AuditRecord]:  # type: ignore[no-untyped-def]
    with factory() as s:
        return list(s.scalars(select(AuditRecord).order_by(AuditRecord.seq)))


def test_concurrent_requests_each_get_one_record_in_fewer_commits_and_the_chain_holds(factory):
    """V16.3.1, V16.4.2: 40 requests handing over their records at once each get exactly one
    record, in the order they arrived, the chain verifies, and the records were written
    together rather than in 40 transactions (they share the append time of their batch)."""
    appender = GroupAppender(factory)

    async def main() -> None:
        await asyncio.gather(*(appender.commit(_work(n)) for n in range(40)))

    asyncio.run(main())
    rows = _records(factory)
    assert [r.entity_id for r in rows] == [str(n) for n in range(40)]
    assert [r.seq for r in rows] == list(range(1, 41))
    assert len({r.at for r in rows}) < 40
    with factory() as s:
        assert audit.verify(s).intact


def test_a_failed_batch_fails_every_request_in_it_and_records_nothing(factory):
    """V16.3.1, V16.5.3: when the write transaction of a batch fails, every request waiting on
    it is told so (none may be answered with data) and none of its records is kept; the next
    batch chains on as if the failed one had never been tried."""
    appender = GroupAppender(factory)
    broken = _work(2)

    def fail(_session) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("disk full")

    broken.writes.append(fail)

    async def first() -> list[BaseException | None]:
        results = await asyncio.gather(
            *(appender.commit(w) for w in (_work(1), broken, _work(3))), return_exceptions=True
        )
        return list(results)

    results = asyncio.run(first())
    assert all(isinstance(r, AuditNotRecorded) for r in results)
    assert _records(factory) == []

    asyncio.run(appender.commit(_work(4)))
    rows = _records(factory)
    assert [(r.seq, r.entity_id) for r in rows] == [(1, "4")]
    with factory() as s:
        assert audit.verify(s).intact


def test_a_read_only_transaction_refuses_to_write(factory, staff):
    """V15.4.3: a use case that writes inside a transaction opened as read-only fails loudly
    instead of writing past the audit log's ordering or losing the write."""
    with unit_of_work(factory) as s:
        pid = patients.register_patient(s, staff.actor(Role.COORDINATOR), valid_patient()).id
    with read_only_session(factory, DeferredWork()) as s:
        patient = s.get(Patient, pid)
        assert patient is not None
        patient.city = "Gdańsk"
        with pytest.raises(WriteInReadOnlyTransaction):
            s.flush()
        s.rollback()
        with pytest.raises(WriteInReadOnlyTransaction):
            s.execute(update(Patient).where(Patient.id == pid).values(city="Gdańsk"))


def test_the_request_boundary_ends_a_read_without_losing_a_change_made_by_mistake(factory, staff):
    """The boundary ends a read-only request without a commit (there is nothing to commit),
    but a row that the use case changed by mistake must still fail the request, not vanish
    while the client is told it succeeded."""
    with unit_of_work(factory) as s:
        pid = patients.register_patient(s, staff.actor(Role.COORDINATOR), valid_patient()).id
    request = SimpleNamespace(
        app=SimpleNamespace(state=SimpleNamespace(session_factory=factory)),
        state=SimpleNamespace(),
        client=None,
    )
    work = DeferredWork()
    with (  # noqa: PT012
        pytest.raises(WriteInReadOnlyTransaction),
        _read_transaction(request, work) as s,  # type: ignore[arg-type]
    ):
        s.get(Patient, pid).city = "Gdańsk"  # type: ignore[union-attr]
        audit.record(s, staff.actor(Role.DOCTOR), "patient.read", entity_type="patient")
    assert not work  # nothing of the failed request is appended afterwards
    with factory() as s:
        assert s.get(Patient, pid).city != "Gdańsk"  # type: ignore[union-attr]


def test_the_database_itself_refuses_a_write_on_a_reader_connection(factory, staff):
    """Behind the session's own refusal above: SQL sent straight to the driver, past
    SQLAlchemy's checks, is refused by the database (SQLite's query_only, PostgreSQL's
    default_transaction_read_only), and nothing changes."""
    with unit_of_work(factory) as s:
        pid = patients.register_patient(s, staff.actor(Role.COORDINATOR), valid_patient()).id
    with (
        read_only_session(factory, DeferredWork()) as reader,
        pytest.raises(DBAPIError, match="read-only transaction|readonly database"),
    ):
        reader.connection().exec_driver_sql("UPDATE patients SET city = 'Gdańsk'")
    with unit_of_work(factory) as s:
        assert s.get(Patient, pid).city != "Gdańsk"


def _token(factory, staff, role: Role) -> str:  # type: ignore[no-untyped-def]
    with unit_of_work(factory) as s:
        _, secret = auth.create_api_token(
            s, staff.actor(role), "integration", [Permission.PATIENT_READ.value]
        )
    return secret


def test_a_chart_read_with_a_token_leaves_the_same_record_and_token_use_as_before(
    app, factory, staff
):
    """V16.2.1, V16.3.1: a chart read through the API with a token is answered with the chart
    and leaves exactly one patient.read record with who, from where, what and the outcome, in a
    chain that verifies; the token's last use is stored with it."""
    with unit_of_work(factory) as s:
        pid = patients.register_patient(s, staff.actor(Role.COORDINATOR), valid_patient()).id
    secret = _token(factory, staff, Role.DOCTOR)
    client = browser_client(app)
    before = len(_records(factory))

    r = client.get(f"/api/v1/patients/{pid}", headers={"Authorization": f"Bearer {secret}"})

    assert r.status_code == 200, r.text
    assert r.json()["family_name"] == "Kowalski"
    rows = _records(factory)[before:]
    assert [(x.action, x.entity_type, x.entity_id, x.patient_id, x.outcome) for x in rows] == [
        ("patient.read", "patient", str(pid), pid, "success")
    ]
    doctor = staff.users[Role.DOCTOR]
    assert (rows[0].actor_user_id, rows[0].actor_username, rows[0].actor_role) == (
        doctor.id,
        doctor.username,
        "doctor",
    )
    assert rows[0].source_ip
    with factory() as s:
        assert audit.verify(s).intact
        used = s.scalars(select(ApiToken.last_used_at)).one()
        assert used is not None and utcnow() - used < timedelta(minutes=1)


def test_a_refused_chart_read_with_a_token_is_recorded_as_refused(app, factory, staff):
    """V8.2.2, V16.3.2: a physiotherapist's token cannot open a patient outside the care team:
    403, no chart, and one refused patient.read record, written before the refusal is sent."""
    with unit_of_work(factory) as s:
        pid = patients.register_patient(s, staff.actor(Role.COORDINATOR), valid_patient()).id
    secret = _token(factory, staff, Role.PHYSIOTHERAPIST)
    before = len(_records(factory))

    r = browser_client(app).get(
        f"/api/v1/patients/{pid}", headers={"Authorization": f"Bearer {secret}"}
    )

    assert r.status_code == 403
    assert "Kowalski" not in r.text
    rows = _records(factory)[before:]
    assert [(x.action, x.outcome, x.patient_id) for x in rows] == [("patient.read", "refused", pid)]


def test_a_chart_read_whose_audit_record_cannot_be_written_is_not_answered_with_the_chart(
    app, factory, staff, monkeypatch
):
    """V16.5.3: if the write transaction holding the record fails, the client gets a 500
    problem without the chart, and nothing was stored for it."""
    with unit_of_work(factory) as s:
        pid = patients.register_patient(s, staff.actor(Role.COORDINATOR), valid_patient()).id
    secret = _token(factory, staff, Role.DOCTOR)
    before = len(_records(factory))

    def refuse(*_args, **_kwargs) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(audit, "append", refuse)
    r = browser_client(app).get(
        f"/api/v1/patients/{pid}", headers={"Authorization": f"Bearer {secret}"}
    )

    assert r.status_code == 500
    assert "Kowalski" not in r.text
    assert len(_records(factory)) == before


def test_the_appender_empties_a_grown_write_ahead_log_and_the_chain_holds(tmp_path, monkeypatch):
    """V16.4.2: on SQLite, read-only requests that never pause keep the write-ahead log from
    being restarted by the automatic checkpoints; past its size limit the appender empties it
    after a batch, and the records it holds are kept."""
    from regenspine.audit import appender as appender_module
    from regenspine.cli import upgrade_database
    from regenspine.db import session_factory

    url = f"sqlite:///{tmp_path / 'clinic.db'}"
    upgrade_database(url)
    factory = session_factory(url)
    wal = tmp_path / "clinic.db-wal"
    try:
        asyncio.run(GroupAppender(factory).commit(_work(1)))
        assert wal.stat().st_size > 0  # under the limit: left to the automatic checkpoints

        monkeypatch.setattr(appender_module, "WAL_RESTART_BYTES", 1)
        asyncio.run(GroupAppender(factory).commit(_work(2)))

        assert wal.stat().st_size == 0
        rows = _records(factory)
        assert [r.entity_id for r in rows] == ["1", "2"]
        with factory() as s:
            assert audit.verify(s).intact
    finally:
        factory.kw["bind"].dispose()
