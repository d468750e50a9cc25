"""Online backups and restores of the clinic database (SQLite backup API, pg_dump/pg_restore)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from regenspine.errors import N_, Conflict, DomainError, Message


class BackupFailed(DomainError):
    status = 500
    title = "Backup or restore failed"


@dataclass(frozen=True)
class BackupInfo:
    path: Path
    size_bytes: int


def _libpq_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupFailed(Message(N_("An in-memory database cannot be backed up.")))
    return Path(database)


def backup(url: str, out: Path) -> BackupInfo:
    """Copies a consistent snapshot while the clinic keeps working."""
    out.parent.mkdir(parents=True, exist_ok=True)
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        source = sqlite3.connect(_sqlite_path(url))
        target = sqlite3.connect(out)
        try:
            with target:
                source.backup(target)  # the online backup API: safe under concurrent writes
        finally:
            target.close()
            source.close()
    elif backend == "postgresql":
        _run(
            [
                "pg_dump",
                "--format=custom",
                "--no-owner",
                "--no-privileges",
                "--file",
                str(out),
                _libpq_url(url),
            ]
        )
    else:
        raise BackupFailed(Message(N_("Backups support SQLite and PostgreSQL only.")))
    return BackupInfo(out, out.stat().st_size)


def _has_data(url: str) -> bool:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if "patients" not in inspect(conn).get_table_names():
                return False
            return bool(conn.execute(text("SELECT 1 FROM audit_records LIMIT 1")).first())
    finally:
        engine.dispose()


def restore(url: str, source: Path, *, force: bool = False) -> None:
    """Replaces the database's content with a backup; refuses to overwrite records unless
    forced, because a restore over live data discards whatever happened since the backup."""
    if not source.is_file():
        raise BackupFailed(
            Message(N_("The backup file %(path)s does not exist."), path=str(source))
        )
    if not force and _has_data(url):
        raise Conflict(
            Message(
                N_(
                    "The target database already holds clinical records. Restore into an empty "
                    "database, or pass --force if you really mean to replace them."
                )
            )
        )
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        if src.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise BackupFailed(Message(N_("The backup file is damaged.")))
        target_path = _sqlite_path(url)
        target_path.parent.mkdir(parents=True, exist_ok=True)
        dest = sqlite3.connect(target_path)
        try:
            with dest:
                src.backup(dest)
        finally:
            dest.close()
            src.close()
    elif backend == "postgresql":
        _run(
            [
                "pg_restore",
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-privileges",
                "--single-transaction",
                "--dbname",
                _libpq_url(url),
                str(source),
            ]
        )
    else:
        raise BackupFailed(Message(N_("Backups support SQLite and PostgreSQL only.")))


def _run(command: list[str]) -> None:
    if shutil.which(command[0]) is None:
        raise BackupFailed(
            Message(N_("%(tool)s is not installed (Debian: postgresql-client)."), tool=command[0])
        )
    result = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)  # noqa: S603
    if result.returncode != 0:
        # The tool's message may contain the connection URL; keep only its last line.
        last = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise BackupFailed(
            Message(N_("%(tool)s failed: %(error)s"), tool=command[0], error=last[:300])
        )
