"""Backup and restore on both databases: a fresh database gets the same records and the same
audit chain head (ASVS V14.2: data protection)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
from tests.conftest import new_database, skip_or_fail, valid_patient


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


# --- what a restore accepts ---------------------------------------------------------------


def _kind(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def _patient_count(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM patients")).scalar() or 0)
    finally:
        engine.dispose()


def _set_revision(url: str, revision: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


def _revision(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar())
    finally:
        engine.dispose()


def _heads() -> tuple[str, str]:
    """This version's schema revision and the one before it."""
    from alembic.script import ScriptDirectory

    from regenspine.cli import alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_revision("head")
    assert head is not None and isinstance(head.down_revision, str)
    return head.revision, head.down_revision


def _cli(url: str, monkeypatch, *args: str):  # type: ignore[no-untyped-def]
    from regenspine.cli import app as cli

    monkeypatch.setenv("REGENSPINE_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(cli, list(args))
    finally:
        get_settings.cache_clear()


def _failed_cleanly(result) -> str:  # type: ignore[no-untyped-def]
    """The command exited 1 with a message, not with an exception; returns the message."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_restore_refuses_a_database_that_is_not_a_regenspine_one_and_leaves_the_target_alone(
    factory, staff, database_url, tmp_path
):
    from regenspine.backup import BackupFailed, backup

    with unit_of_work(factory) as s:
        patients.register_patient(s, staff.actor(Role.COORDINATOR), valid_patient())
    # Another program's database, backed up with the same tools.
    with new_database(_kind(database_url), tmp_path / "other.db") as other:
        engine = create_engine(other)
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE invoices (id INTEGER PRIMARY KEY)"))
        engine.dispose()
        backup(other, tmp_path / "other.backup")
    with pytest.raises(BackupFailed) as err:
        restore(database_url, tmp_path / "other.backup", force=True)
    assert "is not a RegenSpine backup" in str(err.value)
    assert _patient_count(database_url) == 1


def test_restore_refuses_a_backup_from_a_newer_schema_and_leaves_the_target_alone(
    factory, staff, database_url, tmp_path
):
    from regenspine.backup import BackupFailed, backup
    from regenspine.cli import upgrade_database

    with unit_of_work(factory) as s:
        patients.register_patient(s, staff.actor(Role.COORDINATOR), valid_patient())
    with new_database(_kind(database_url), tmp_path / "newer.db") as newer:
        upgrade_database(newer)
        _set_revision(newer, "0999_from_the_future")
        backup(newer, tmp_path / "newer.backup")
    with pytest.raises(BackupFailed) as err:
        restore(database_url, tmp_path / "newer.backup", force=True)
    assert "newer or different version" in str(err.value)
    assert "0999_from_the_future" in str(err.value)
    assert _patient_count(database_url) == 1
    assert _revision(database_url) == _heads()[0]


def test_an_older_backup_is_restored_and_the_operator_is_told_to_upgrade(
    database_url, empty_database_url, tmp_path, monkeypatch
):
    from alembic import command

    from regenspine.backup import backup
    from regenspine.cli import alembic_config, upgrade_database

    head, previous = _heads()
    with new_database(_kind(database_url), tmp_path / "older.db") as older:
        command.upgrade(alembic_config(older), previous)
        backup(older, tmp_path / "older.backup")
    restored = _cli(empty_database_url, monkeypatch, "restore", str(tmp_path / "older.backup"))
    assert restored.exit_code == 0, restored.output
    said = " ".join(restored.output.split())
    assert "older schema" in said and previous in said
    assert "Run `regenspine db upgrade` before starting RegenSpine" in said
    assert _revision(empty_database_url) == previous
    upgrade_database(empty_database_url)
    assert _revision(empty_database_url) == head


def test_an_older_backup_is_refused_over_a_postgresql_database_already_at_another_schema(
    tmp_path,
):
    """pg_restore --clean leaves tables the backup does not hold: the upgrade would then fail."""
    from alembic import command

    from regenspine.backup import backup
    from regenspine.cli import alembic_config, upgrade_database

    _, previous = _heads()
    with (
        new_database("postgresql", tmp_path / "unused.db") as older,
        new_database("postgresql", tmp_path / "unused.db") as target,
    ):
        command.upgrade(alembic_config(older), previous)
        backup(older, tmp_path / "older.backup")
        upgrade_database(target)
        with pytest.raises(Conflict) as err:
            restore(target, tmp_path / "older.backup")
        assert "Restore it into a new, empty database" in str(err.value)
        assert _revision(target) == _heads()[0]


# --- the password stays out of the process list ---------------------------------------------


def _recording_tool(bin_dir: Path, name: str, log: Path) -> None:
    """A `name` first on PATH that writes down its argv and PGPASSWORD, then runs the real one."""
    real = shutil.which(name)
    assert real is not None, f"{name} is not installed"
    tool = bin_dir / name
    tool.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(log)!r}, 'a') as fh:\n"
        "    fh.write(json.dumps({'argv': sys.argv, 'pgpassword': os.environ.get('PGPASSWORD')})"
        " + '\\n')\n"
        f"os.execv({real!r}, [{real!r}, *sys.argv[1:]])\n"
    )
    tool.chmod(0o755)


def test_the_postgresql_password_goes_to_pg_dump_and_pg_restore_in_the_environment_only(
    tmp_path, monkeypatch
):
    from sqlalchemy.engine import make_url

    from regenspine.backup import backup
    from regenspine.cli import upgrade_database

    password = "s3cret-Pass-word-77"  # trust authentication on the test server ignores it
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.jsonl"
    for name in ("pg_dump", "pg_restore"):
        _recording_tool(bin_dir, name, log)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with (
        new_database("postgresql", tmp_path / "unused.db") as source,
        new_database("postgresql", tmp_path / "unused.db") as target,
    ):
        upgrade_database(source)
        with_password = make_url(source).set(password=password)
        backup(with_password.render_as_string(hide_password=False), tmp_path / "pg.backup")
        target_with_password = make_url(target).set(password=password)
        restore(target_with_password.render_as_string(hide_password=False), tmp_path / "pg.backup")
        assert _revision(target) == _heads()[0]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    connecting = [c for c in calls if "--file" in c["argv"] or "--dbname" in c["argv"]]
    assert {Path(c["argv"][0]).name for c in connecting} == {"pg_dump", "pg_restore"}
    for call in calls:
        assert not any(password in arg for arg in call["argv"]), call["argv"]
    for call in connecting:
        assert call["pgpassword"] == password


# --- the backup file --------------------------------------------------------------------------


def test_a_backup_is_readable_only_by_its_owner_also_when_it_replaces_a_file(
    database_url, tmp_path
):
    from regenspine.backup import backup

    out = tmp_path / "clinic.backup"
    previous = os.umask(0o022)
    try:
        backup(database_url, out)
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        out.unlink()
        out.write_text("an old file anyone could read\n")
        out.chmod(0o644)
        backup(database_url, out, force=True)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["clinic.backup"]  # no partial file left


def _live_sqlite_database(path: Path) -> str:
    """A migrated SQLite database in WAL mode, as the application keeps it."""
    from regenspine.cli import upgrade_database

    url = f"sqlite:///{path}"
    upgrade_database(url)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    conn.close()
    return url


def test_a_sqlite_backup_is_not_left_in_wal_mode(tmp_path):
    from regenspine.backup import backup

    url = _live_sqlite_database(tmp_path / "live.db")
    backup(url, tmp_path / "clinic.backup")
    with sqlite3.connect(tmp_path / "clinic.backup") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


@contextmanager
def _read_only_copy_of(folder: Path) -> Iterator[Path]:
    """`folder` as read-only media: a read-only bind mount for root, who ignores file modes;
    otherwise the folder itself without write permission."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    media = folder.with_name(folder.name + "-media")
    media.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(folder), str(media)], check=False)
    if mounted.returncode != 0:
        skip_or_fail("cannot bind-mount a folder read-only (needs CAP_SYS_ADMIN as root)")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(media)], check=True)
        yield media
    finally:
        # Lazily: a connection the code under test failed to close must not leave it mounted.
        subprocess.run(["umount", "--lazy", str(media)], check=True)


def test_a_backup_restores_from_read_only_media_even_in_wal_mode(tmp_path):
    """Backups written before journal mode DELETE are in WAL mode; they restore all the same."""
    from regenspine.backup import backup

    url = _live_sqlite_database(tmp_path / "live.db")
    folder = tmp_path / "usb"
    folder.mkdir()
    backup(url, folder / "clinic.backup")
    with sqlite3.connect(folder / "clinic.backup") as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    with _read_only_copy_of(folder) as media:
        with pytest.raises(OSError):
            (media / "probe").write_text("")  # really read-only, or this test proves nothing
        info = restore(f"sqlite:///{tmp_path / 'restored.db'}", media / "clinic.backup")
    assert info.revision == _heads()[0] and not info.needs_upgrade
    assert _revision(f"sqlite:///{tmp_path / 'restored.db'}") == _heads()[0]


# --- the command line refuses clearly ---------------------------------------------------------


def test_restoring_a_file_that_is_not_a_database_is_refused_in_one_line(
    database_url, tmp_path, monkeypatch
):
    notdb = tmp_path / "notdb.txt"
    notdb.write_text("shopping list: milk, bread\n")
    message = _failed_cleanly(_cli(database_url, monkeypatch, "restore", str(notdb), "--force"))
    assert "is not a RegenSpine backup" in message


def test_backup_refuses_to_overwrite_a_file_unless_forced(
    database_url, empty_database_url, tmp_path, monkeypatch
):
    out = tmp_path / "notes.txt"
    out.write_text("not a database\n")
    message = _failed_cleanly(_cli(database_url, monkeypatch, "backup", "--out", str(out)))
    assert "already exists" in message and "--force" in message
    assert out.read_text() == "not a database\n"
    forced = _cli(database_url, monkeypatch, "backup", "--out", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    info = restore(empty_database_url, out)  # the file now is a backup of the clinic
    assert info.revision == _heads()[0]


def test_backup_into_a_folder_is_refused(database_url, tmp_path, monkeypatch):
    message = _failed_cleanly(_cli(database_url, monkeypatch, "backup", "--out", str(tmp_path)))
    assert "is a folder" in message


def test_backup_over_the_live_database_is_refused_even_when_forced(tmp_path, monkeypatch):
    live = tmp_path / "live.db"
    url = _live_sqlite_database(live)
    before = live.read_bytes()
    via_link = tmp_path / "link.db"
    via_link.symlink_to(live)
    for out in (live, via_link):
        result = _cli(url, monkeypatch, "backup", "--out", str(out), "--force")
        assert "is the clinic database itself" in _failed_cleanly(result)
    assert live.read_bytes() == before
