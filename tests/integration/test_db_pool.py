"""PostgreSQL connections that die in the pool (a server restart, a network cut, an idle
timeout) are replaced, without a test query on every request."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from regenspine import db
from regenspine.db import DeferredWork, read_only_session, session_factory
from tests.conftest import PG_ADMIN_URL

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def _one_pooled_connection(engine: Engine) -> int:
    engine.dispose()
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(pid: int) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    admin.dispose()


def test_a_connection_that_died_while_idle_is_replaced_before_use(database_url, monkeypatch):
    engine = db.get_engine(database_url)
    dead = _one_pooled_connection(engine)
    _terminate(dead)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # it has been idle long enough

    with engine.connect() as connection:
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    assert pid != dead


def test_a_connection_in_steady_use_is_not_tested_and_the_pool_recovers_after_one_failure(
    database_url, monkeypatch
):
    """The price of not testing busy connections: a statement on a connection that died
    since its last use fails once, and the pool then replaces every connection it held."""
    engine = db.get_engine(database_url)
    dead = _one_pooled_connection(engine)
    _terminate(dead)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)

    with pytest.raises(OperationalError), engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    with engine.connect() as connection:
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    assert pid != dead


# Read-only requests read on the event loop, from connections of their own (db.py, _readers).


def _reader_pid(session: Session) -> int:
    return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_reads_never_wait_for_a_connection_held_by_the_writers(database_url):
    """V15.4.3: a read on the event loop must not wait for a pooled connection, since the
    request holding it may need that event loop to give it back. With every connection of the
    writers' pool taken, and more readers open at once than the readers keep, every read is
    still answered at once (a shared or a bounded pool would wait 30 s, then fail)."""
    factory = session_factory(database_url)
    engine = db.get_engine(database_url)
    writers = [engine.connect() for _ in range(engine.pool.size() + engine.pool._max_overflow)]  # type: ignore[attr-defined]
    try:
        readers = [
            read_only_session(factory, DeferredWork()) for _ in range(db.READER_CONNECTIONS + 2)
        ]
        pids = {_reader_pid(reader) for reader in readers}  # all open at once
        assert len(pids) == db.READER_CONNECTIONS + 2
        for reader in readers:
            reader.close()
    finally:
        for connection in writers:
            connection.close()


def test_a_read_that_runs_too_long_is_cancelled_by_the_server(database_url, monkeypatch):
    """A read must not hold the event loop, and every request of its process, for long: the
    server cancels it after READ_STATEMENT_TIMEOUT_MS and the next read is served."""
    monkeypatch.setattr(db, "READ_STATEMENT_TIMEOUT_MS", 200)
    db.dispose_engines()  # the readers take the timeout when they connect
    factory = session_factory(database_url)
    with (
        read_only_session(factory, DeferredWork()) as reader,
        pytest.raises(OperationalError, match="statement timeout"),
    ):
        reader.execute(text("SELECT pg_sleep(5)"))
    with read_only_session(factory, DeferredWork()) as reader:
        assert reader.execute(text("SELECT 1")).scalar_one() == 1
    db.dispose_engines()  # later tests get readers with the usual timeout


def test_a_reader_connection_that_died_while_idle_is_replaced_before_use(database_url, monkeypatch):
    db.dispose_engines()
    factory = session_factory(database_url)
    with read_only_session(factory, DeferredWork()) as reader:
        dead = _reader_pid(reader)
    _terminate(dead)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
    with read_only_session(factory, DeferredWork()) as reader:
        assert _reader_pid(reader) != dead
