"""Backup and restore on both databases: a fresh database gets the same records and the same
audit chain head (ASVS V14.2: data protection)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, func, select, text
from typer.testing import CliRunner

from regenspine.audit import service as audit
from regenspine.auth.permissions import Role
from regenspine.backup import restore
from regenspine.config import get_settings
from regenspine.db import Base, session_factory, unit_of_work
from regenspine.errors import Conflict
from regenspine.patients import service as patients
from tests.conftest import valid_patient


def _counts_and_head(url: str) -> tuple[dict[str, int], str, bool]:
    import regenspine.models  # noqa: F401

    factory = session_factory(url)
    with factory() as s:
        counts = {
            t.name: s.scalar(select(func.count()).select_from(t)) or 0
            for t in Base.metadata.sorted_tables
        }
        result = audit.verify(s)
    return counts, result.head_hash, result.intact


def test_a_backup_restored_into_a_fresh_database_has_the_same_records_and_audit_head(
    factory, staff, database_url, empty_database_url, tmp_path, monkeypatch
):
    from regenspine.cli import app as cli

    with unit_of_work(factory) as s:
        for n in range(3):
            patients.register_patient(
                s,
                staff.actor(Role.COORDINATOR),
                valid_patient(
                    id_type="passport",
                    national_id=f"X100000{n}",
                    id_country="DE",
                    given_name="Anna",
                    family_name=f"Backup{chr(65 + n)}",
                ),
            )
    before = _counts_and_head(database_url)
    runner = CliRunner()
    out = tmp_path / "clinic.backup"
    monkeypatch.setenv("REGENSPINE_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        made = runner.invoke(cli, ["backup", "--out", str(out)])
        assert made.exit_code == 0, made.output
        monkeypatch.setenv("REGENSPINE_DATABASE_URL", empty_database_url)
        get_settings.cache_clear()
        restored = runner.invoke(cli, ["restore", str(out)])
        assert restored.exit_code == 0, restored.output
        verified = runner.invoke(cli, ["audit", "verify"])
    finally:
        get_settings.cache_clear()
    after = _counts_and_head(empty_database_url)
    assert after == before
    assert after[0]["patients"] == 3 and after[2] is True
    assert before[1] in verified.output


def test_restoring_over_existing_records_is_refused_without_force(
    factory, staff, database_url, tmp_path
):
    from regenspine.backup import backup

    with unit_of_work(factory) as s:
        patients.register_patient(s, staff.actor(Role.COORDINATOR), valid_patient())
    out = tmp_path / "clinic.backup"
    backup(database_url, out)
    with pytest.raises(Conflict) as err:
        restore(database_url, out)
    assert "already holds clinical records" in str(err.value)
    engine = create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM patients")).scalar() == 1
    engine.dispose()
