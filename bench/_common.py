"""What the benchmark scripts share: a fresh database per run, a free port, the CLI command."""

from __future__ import annotations

import socket
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text

from regenspine.db import dispose_engines

HOST = "127.0.0.1"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def fresh_database(backend: str, tmp: Path) -> tuple[str, Callable[[], None]]:
    """A new empty database (an SQLite file in ``tmp`` or a PostgreSQL database) and the
    function that removes it."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp / (uuid.uuid4().hex + '.db')}"
        return url, lambda: None
    name = f"regenspine_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        dispose_engines()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name, drop


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def regenspine_command() -> list[str]:
    script = Path(sys.executable).with_name("regenspine")
    return [str(script)] if script.exists() else [sys.executable, "-m", "regenspine.cli"]
