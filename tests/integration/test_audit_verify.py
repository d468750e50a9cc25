"""Checking the audit chain on both databases: against a head written down outside the
database, and without holding up the clinic's writers while it reads the whole log."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from regenspine.audit import service as audit
from regenspine.audit.chain import ChainEntry
from regenspine.audit.models import AuditRecord
from regenspine.auth import service as auth
from regenspine.auth.actor import SYSTEM_ACTOR
from regenspine.auth.permissions import Permission, Role
from regenspine.config import get_settings
from regenspine.db import unit_of_work
from tests.conftest import Staff, browser_client

DELETE_NEWEST = "DELETE FROM audit_records WHERE seq = (SELECT max(seq) FROM audit_records)"


@pytest.fixture
def verify_command(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Result]]:
    """Runs `regenspine audit verify ARGS` against the test database; returns the result."""
    from regenspine.cli import app as cli

    monkeypatch.setenv("REGENSPINE_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        yield lambda *args: CliRunner().invoke(cli, ["audit", "verify", *args])
    finally:
        get_settings.cache_clear()


def _seed(factory: sessionmaker[Session], n: int) -> None:
    with unit_of_work(factory) as s:
        for i in range(n):
            audit.record(s, SYSTEM_ACTOR, "test.event", entity_type="t", entity_id=i)


def _tamper(factory: sessionmaker[Session], sql: str) -> None:
    with factory() as s:
        s.execute(text(sql))
        s.commit()


def _written_head(output: str) -> str:
    """The head as the command tells the auditor to write it down."""
    found = re.search(r"--expect-head (\d+:[0-9a-f]{64})", output)
    assert found, output
    return found.group(1)


def _plain(output: str) -> str:
    return " ".join(output.split())


@pytest.mark.parametrize("deleted", ["the newest record", "the two newest records"])
def test_records_deleted_from_the_end_of_the_log_fail_the_check_against_the_written_head(
    factory, verify_command, deleted
):
    _seed(factory, 6)
    first = verify_command()
    assert first.exit_code == 0, first.output
    assert "Head record: 6, written " in first.output
    head = _written_head(first.output)
    assert head.startswith("6:")
    assert verify_command("--expect-head", head).exit_code == 0

    for _ in range(deleted.count("two") + 1):
        _tamper(factory, DELETE_NEWEST)

    for written in (head, head.split(":")[1]):  # the number and the hash, or the hash alone
        checked = verify_command("--expect-head", written)
        assert checked.exit_code == 1, checked.output
        said = _plain(checked.output)
        assert "BROKEN" in said and "head_missing" in said
        assert "records were deleted from the end of the log" in said


def test_a_head_written_down_earlier_still_passes_after_the_log_grows_and_a_wrong_one_fails(
    factory, verify_command
):
    _seed(factory, 3)
    head = _written_head(verify_command().output)
    _seed(factory, 4)
    assert verify_command("--expect-head", head).exit_code == 0

    digest = head.split(":")[1]
    wrong_number = verify_command("--expect-head", f"2:{digest}")
    assert wrong_number.exit_code == 1
    assert "is record 3's, not record 2's" in _plain(wrong_number.output)

    # The log rewritten from record 3 on (hashes recomputed by whoever changed it) no longer
    # holds the record that was written down.
    rewritten = verify_command("--expect-head", f"3:{'a' * 64}")
    assert rewritten.exit_code == 1
    assert "record 3 is not the one written down" in _plain(rewritten.output)

    garbled = verify_command("--expect-head", "3:not-a-hash")
    assert garbled.exit_code == 2
    assert "the record's number, a colon and the hash" in _plain(garbled.output)


def test_an_emptied_log_beside_staff_accounts_is_reported_broken(factory, staff, verify_command):
    _tamper(factory, "DELETE FROM audit_records")
    emptied = verify_command()
    assert emptied.exit_code == 1, emptied.output
    assert "the log is empty, but the database holds staff accounts" in _plain(emptied.output)


def test_the_empty_log_of_a_new_clinic_is_intact(factory, verify_command):
    empty = verify_command()
    assert empty.exit_code == 0, empty.output
    assert "intact" in empty.output and f"Head hash: {'0' * 64}" in empty.output


def _token(factory: sessionmaker[Session], staff: Staff) -> str:
    with unit_of_work(factory) as s:
        _, secret = auth.create_api_token(
            s, staff.actor(Role.AUDITOR), "chain check", [Permission.AUDIT_READ.value]
        )
    return secret


def test_the_api_check_answers_with_the_head_and_fails_when_the_written_head_was_deleted(
    app, factory, staff
):
    _seed(factory, 4)
    client = browser_client(app)
    client.headers["Authorization"] = f"Bearer {_token(factory, staff)}"

    first = client.get("/api/v1/audit/verify")
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["intact"] and answer["head_seq"] == answer["records"]
    assert answer["head_at"] is not None
    written = f"{answer['head_seq']}:{answer['head_hash']}"
    still = client.get("/api/v1/audit/verify", params={"expect_head": written})
    assert still.json()["intact"], still.text

    # The written head and every record after it (the checks' own records among them).
    _tamper(factory, f"DELETE FROM audit_records WHERE seq >= {answer['head_seq']}")
    gone = client.get("/api/v1/audit/verify", params={"expect_head": written}).json()
    assert not gone["intact"]
    assert gone["first_break_kind"] == "head_missing"
    assert gone["first_break_seq"] == answer["head_seq"]
    with factory() as s:
        recorded = s.scalars(
            select(AuditRecord)
            .where(AuditRecord.action == "audit.verify")
            .order_by(AuditRecord.seq.desc())
            .limit(1)
        ).one()
    assert json.loads(recorded.detail)["intact"] is False  # the log says what the answer said

    garbled = client.get("/api/v1/audit/verify", params={"expect_head": "12:xyz"})
    assert garbled.status_code == 422
    assert "expect_head" in garbled.json()["errors"]


def _writers_that_never_wait(database_url: str) -> sessionmaker[Session]:
    """Sessions like the app's whose statements fail at once, instead of waiting, on a lock
    another connection holds: the database write lock on SQLite (taken by BEGIN IMMEDIATE, as
    the app does), any lock on PostgreSQL (the chain's advisory lock among them)."""
    if database_url.startswith("sqlite"):
        engine = create_engine(database_url, connect_args={"timeout": 0})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        engine = create_engine(database_url, connect_args={"options": "-c lock_timeout=1"})
    return sessionmaker(bind=engine, expire_on_commit=False)


@pytest.fixture
def append_while_verifying(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[int]]:
    """While the chain is being walked (at its first record), appends a record in a write
    transaction that may not wait for any lock, and commits it; yields the seqs it walked at."""
    writers = _writers_that_never_wait(database_url)
    walked_at: list[int] = []
    to_entry = audit.to_entry

    def write_then_walk(row: AuditRecord) -> ChainEntry:
        if not walked_at:
            with unit_of_work(writers) as s:
                audit.record(s, SYSTEM_ACTOR, "test.written_during_the_check")
            walked_at.append(row.seq)
        return to_entry(row)

    monkeypatch.setattr(audit, "to_entry", write_then_walk)
    yield walked_at
    writers.kw["bind"].dispose()


def _actions(factory: sessionmaker[Session]) -> list[str]:
    with factory() as s:
        return list(s.scalars(select(AuditRecord.action).order_by(AuditRecord.seq)))


def test_a_write_commits_while_the_command_walks_the_chain(
    factory, verify_command, append_while_verifying
):
    _seed(factory, 5)
    checked = verify_command()
    assert checked.exit_code == 0, checked.output
    assert append_while_verifying == [1]
    assert "intact: 5 records" in _plain(checked.output)  # the log as it stood
    assert _actions(factory)[-1] == "test.written_during_the_check"


def test_a_write_commits_while_the_api_walks_the_chain_and_the_check_is_recorded_after_it(
    app, factory, staff, append_while_verifying
):
    _seed(factory, 5)
    client = browser_client(app)
    client.headers["Authorization"] = f"Bearer {_token(factory, staff)}"

    checked = client.get("/api/v1/audit/verify")

    assert checked.status_code == 200, checked.text
    assert checked.json()["intact"]
    assert append_while_verifying == [1]
    assert _actions(factory)[-2:] == ["test.written_during_the_check", "audit.verify"]
    with factory() as s:
        assert audit.verify(s).intact
