"""Online backups and restores of the clinic database (SQLite backup API, pg_dump/pg_restore)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL, make_url

from regenspine.errors import N_, Conflict, DomainError, Message


class BackupFailed(DomainError):
    status = 500
    title = "Backup or restore failed"


@dataclass(frozen=True)
class BackupInfo:
    path: Path
    size_bytes: int


@dataclass(frozen=True)
class RestoreInfo:
    revision: str  # the schema revision the backup was written at
    head: str  # the schema revision this version of RegenSpine runs on

    @property
    def needs_upgrade(self) -> bool:
        return self.revision != self.head


def _libpq_url(url: str) -> str:
    # Without the password: a command line is visible to every user in `ps`.
    parts = make_url(url)
    return URL.create(
        "postgresql",
        username=parts.username,
        host=parts.host,
        port=parts.port,
        database=parts.database,
        query=parts.query,
    ).render_as_string()


def _libpq_password(url: str) -> str | None:
    password = make_url(url).password
    return None if password is None else str(password)


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupFailed(Message(N_("An in-memory database cannot be backed up.")))
    return Path(database)


def _check_backend(url: str) -> str:
    backend = make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise BackupFailed(Message(N_("Backups support SQLite and PostgreSQL only.")))
    return backend


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:  # either does not exist
        return False


def backup(url: str, out: Path, *, force: bool = False) -> BackupInfo:
    """Copies a consistent snapshot while the clinic keeps working. The file is readable by its
    owner only, and appears complete or not at all."""
    backend = _check_backend(url)
    if out.is_dir():
        raise BackupFailed(
            Message(
                N_("%(path)s is a folder; name the file to write the backup to."), path=str(out)
            )
        )
    if backend == "sqlite" and _same_file(out, _sqlite_path(url)):
        raise BackupFailed(
            Message(
                N_("%(path)s is the clinic database itself; choose another file."), path=str(out)
            )
        )
    if out.exists() and not force:
        raise Conflict(
            Message(
                N_("%(path)s already exists. Choose another file or add --force."), path=str(out)
            )
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file 0600 before anything is written to it.
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
        os.close(fd)
        partial = Path(name)
        try:
            if backend == "sqlite":
                _sqlite_backup(_sqlite_path(url), partial)
            else:
                _run(
                    [
                        "pg_dump",
                        "--format=custom",
                        "--no-owner",
                        "--no-privileges",
                        "--file",
                        str(partial),
                        _libpq_url(url),
                    ],
                    password=_libpq_password(url),
                )
            os.chmod(partial, 0o600)
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    except OSError as exc:
        raise BackupFailed(
            Message(
                N_("The backup could not be written to %(path)s: %(error)s"),
                path=str(out),
                error=exc.strerror or str(exc),
            )
        ) from exc
    return BackupInfo(out, out.stat().st_size)


def _sqlite_backup(database: Path, out: Path) -> None:
    try:
        # Read-only, so that a mistyped database URL is not created empty and backed up.
        source = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
        try:
            target = sqlite3.connect(out)
            try:
                with target:
                    source.backup(target)  # the online backup API: safe under concurrent writes
                # The copy inherits WAL mode, which cannot be read from read-only media.
                target.execute("PRAGMA journal_mode=DELETE")
            finally:
                target.close()
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise BackupFailed(
            Message(
                N_("SQLite could not back up %(path)s: %(error)s"),
                path=str(database),
                error=str(exc),
            )
        ) from exc


def _has_data(url: str) -> bool:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if "patients" not in inspect(conn).get_table_names():
                return False
            return bool(conn.execute(text("SELECT 1 FROM audit_records LIMIT 1")).first())
    finally:
        engine.dispose()


def _schema_revision(url: str) -> str | None:
    """The Alembic revision of the target database, None when it has no schema yet."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if "alembic_version" not in inspect(conn).get_table_names():
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def _refuse_over_records(url: str, force: bool) -> None:
    if not force and _has_data(url):
        raise Conflict(
            Message(
                N_(
                    "The target database already holds clinical records. Restore into an empty "
                    "database, or pass --force if you really mean to replace them."
                )
            )
        )


def _not_a_backup(source: Path) -> BackupFailed:
    return BackupFailed(
        Message(N_("%(path)s is not a RegenSpine backup for this database."), path=str(source))
    )


def _check_revision(url: str, source: Path, revisions: list[str]) -> RestoreInfo:
    """Refuses a backup whose schema this version does not know (written by a newer or another
    program); an older one is accepted and must be upgraded after the restore."""
    from alembic.script import ScriptDirectory

    # The CLI knows where the migrations live; imported here because the CLI imports us.
    from regenspine.cli import alembic_config

    if len(revisions) != 1:
        raise _not_a_backup(source)
    script = ScriptDirectory.from_config(alembic_config(url))
    head = script.get_current_head()
    assert head is not None
    if revisions[0] not in {rev.revision for rev in script.walk_revisions()}:
        raise BackupFailed(
            Message(
                N_(
                    "%(path)s was written by a newer or different version of RegenSpine "
                    "(schema %(revision)s, which this version does not know). Restore it with "
                    "the version that wrote it."
                ),
                path=str(source),
                revision=revisions[0],
            )
        )
    return RestoreInfo(revision=revisions[0], head=head)


def restore(url: str, source: Path, *, force: bool = False) -> RestoreInfo:
    """Replaces the database's content with a backup; refuses to overwrite records unless
    forced, because a restore over live data discards whatever happened since the backup.
    Nothing in the target changes unless the backup is a RegenSpine database whose schema this
    version knows; when it is older, run `regenspine db upgrade` afterwards."""
    backend = _check_backend(url)
    if not source.is_file():
        raise BackupFailed(
            Message(N_("The backup file %(path)s does not exist."), path=str(source))
        )
    if backend == "sqlite":
        return _sqlite_restore(url, source, force=force)
    info = _check_revision(url, source, _pg_backup_revisions(source))
    _refuse_over_records(url, force)
    target = _schema_revision(url)
    if target is not None and target != info.revision:
        # pg_restore --clean drops only what the backup holds; tables from another revision
        # would stay behind and break the next upgrade.
        raise Conflict(
            Message(
                N_(
                    "The target database has schema %(target)s and the backup %(revision)s. "
                    "Restore it into a new, empty database."
                ),
                target=target,
                revision=info.revision,
            )
        )
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
        ],
        password=_libpq_password(url),
    )
    return info


def _sqlite_restore(url: str, source: Path, *, force: bool) -> RestoreInfo:
    try:
        # immutable: no lock or -shm file beside the backup, so read-only media work.
        src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as exc:
        raise _not_a_backup(source) from exc
    try:
        try:
            tables = {row[0] for row in src.execute("SELECT name FROM sqlite_master")}
            revisions = (
                [row[0] for row in src.execute("SELECT version_num FROM alembic_version")]
                if "alembic_version" in tables
                else []
            )
        except sqlite3.DatabaseError as exc:
            raise _not_a_backup(source) from exc
        info = _check_revision(url, source, revisions)
        try:
            if src.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise BackupFailed(Message(N_("The backup file is damaged.")))
            _refuse_over_records(url, force)
            target_path = _sqlite_path(url)
            target_path.parent.mkdir(parents=True, exist_ok=True)
            dest = sqlite3.connect(target_path)
            try:
                with dest:
                    src.backup(dest)
            finally:
                dest.close()
        except sqlite3.Error as exc:
            raise BackupFailed(
                Message(
                    N_("SQLite could not restore %(path)s: %(error)s"),
                    path=str(source),
                    error=str(exc),
                )
            ) from exc
    finally:
        src.close()
    return info


def _pg_backup_revisions(source: Path) -> list[str]:
    """Reads alembic_version out of a pg_dump archive, without connecting to any server."""
    script = _run(
        ["pg_restore", "--data-only", "--table=alembic_version", "--file=-", str(source)],
        failure=_not_a_backup(source),
    )
    revisions: list[str] = []
    copying = False
    for line in script.splitlines():
        if copying and line == "\\.":
            break
        if copying:
            revisions.append(line)
        copying = copying or (line.startswith("COPY ") and "alembic_version" in line)
    return revisions


def _run(
    command: list[str], *, password: str | None = None, failure: BackupFailed | None = None
) -> str:
    """Runs a PostgreSQL client tool and returns what it printed. The password travels in the
    child's environment only, never on its command line."""
    if shutil.which(command[0]) is None:
        raise BackupFailed(
            Message(N_("%(tool)s is not installed (Debian: postgresql-client)."), tool=command[0])
        )
    env = None if password is None else {**os.environ, "PGPASSWORD": password}
    result = subprocess.run(  # noqa: S603
        command, capture_output=True, text=True, timeout=3600, check=False, env=env
    )
    if result.returncode != 0:
        if failure is not None:
            raise failure
        # The tool's message may contain the connection URL; keep only its last line.
        last = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise BackupFailed(
            Message(N_("%(tool)s failed: %(error)s"), tool=command[0], error=last[:300])
        )
    return result.stdout
