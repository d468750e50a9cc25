"""The liveness probe: /livez says the process answers, without the database and without sign-in.

A supervisor restarts a process whose /livez stops answering; a database outage must not make
every app process look dead (that is what /healthz reports, with a 503)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

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
        client.get("/healthz")  # the listener does see the readiness check's query
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
