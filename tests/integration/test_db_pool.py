"""PostgreSQL connections that die in the pool (a server restart, a network cut, an idle
timeout) are replaced, without a test query on every request."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from regenspine import db
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
