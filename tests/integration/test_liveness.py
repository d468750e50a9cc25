"""The liveness probe: /livez says the process answers, without the database and without sign-in.

A supervisor restarts a process whose /livez stops answering; a database outage must not make
every app process look dead (that is what /healthz reports, with a 503)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, text

from tests.conftest import browser_client


def test_liveness_answers_without_a_single_database_statement(app):
    """V13.4.5, V13.4.6: the monitoring endpoint is public on purpose and says only that the
    process is up: no version, no database state, nothing about the clinic."""
    engine = app.state.session_factory.kw["bind"]
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        client = browser_client(app)
        live = client.get("/livez")
        assert statements == []
        with app.state.session_factory() as session:  # the listener does see the app's queries
            session.execute(text("SELECT 1"))
        assert statements, "the statement listener is not attached to the app's engine"
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}
    assert live.headers["cache-control"] == "no-store"


def test_liveness_stays_up_while_the_database_is_unreachable():
    """V13.4.5: liveness and readiness disagree exactly when the database is down, so a process
    is not restarted for a database outage while /healthz still takes it out of rotation."""
    from regenspine.app import create_app
    from regenspine.config import get_settings

    settings = get_settings().model_copy(
        update={"database_url": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    )
    client = browser_client(create_app(settings))
    assert client.get("/livez").status_code == 200
    assert client.get("/healthz").status_code == 503


def test_readiness_does_not_queue_behind_a_writer(tmp_path):
    """SQLite: a transaction holding the database write lock is normal under load; /healthz
    must still answer 200, not wait out the busy timeout and report the database dead (503).
    (On PostgreSQL SELECT 1 takes no lock that a writer holds.)"""
    from sqlalchemy import create_engine

    from regenspine.app import create_app
    from regenspine.config import get_settings

    url = f"sqlite:///{tmp_path / 'busy.db'}"
    settings = get_settings().model_copy(update={"database_url": url})
    client = browser_client(create_app(settings))
    engine = create_engine(url, connect_args={"isolation_level": None})
    with engine.connect() as writer:
        writer.exec_driver_sql("PRAGMA journal_mode=WAL")
        writer.exec_driver_sql("CREATE TABLE t (x)")
        writer.exec_driver_sql("BEGIN IMMEDIATE")  # the database write lock, held
        writer.exec_driver_sql("INSERT INTO t VALUES (1)")
        answer = client.get("/healthz")
        writer.exec_driver_sql("ROLLBACK")
    engine.dispose()
    assert answer.status_code == 200
