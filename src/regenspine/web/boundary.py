"""The request boundary: one transaction per request, committed once, refusals audited."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import Request
from sqlalchemy.orm import Session

from regenspine.audit import service as audit
from regenspine.auth.actor import ANONYMOUS, Actor
from regenspine.errors import DomainError

log = logging.getLogger("regenspine.boundary")


def record_refusal(session: Session, actor: Actor, exc: DomainError) -> None:
    """Writes the refusal's audit record once, whichever boundary sees it first."""
    refusal = exc.refusal
    if refusal is None or getattr(exc, "_refusal_recorded", False):
        return
    audit.record(
        session,
        actor,
        refusal.action,
        entity_type=refusal.entity_type,
        entity_id=refusal.entity_id,
        patient_id=refusal.patient_id,
        outcome=audit.Outcome.REFUSED,
        detail=dict(refusal.detail) | {"message": exc.message.msgid},
    )
    exc._refusal_recorded = True  # type: ignore[attr-defined]


def request_actor(request: Request) -> Actor:
    actor = getattr(request.state, "actor", None)
    if actor is not None:
        return actor
    return Actor(user_id=None, username=ANONYMOUS.username, role=None, source_ip=client_ip(request))


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def transaction(request: Request) -> Iterator[Session]:
    """FastAPI dependency (scope="function"): commits before the response is sent, so a client
    never sees success for a write that did not reach the database."""
    factory = request.app.state.session_factory
    session: Session = factory()
    try:
        yield session
        session.commit()
    except DomainError as exc:
        session.rollback()
        if exc.refusal is not None and not getattr(exc, "_refusal_recorded", False):
            try:
                record_refusal(session, request_actor(request), exc)
                session.commit()
            except Exception:  # the refusal stands even if its record could not be written
                session.rollback()
                log.exception("could not record a refusal")
        raise
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def refusable(session: Session, actor: Actor) -> Iterator[None]:
    """Runs a use case in a savepoint: on refusal nothing it wrote stays, but the refusal is
    audited and the page can show the form again with the message."""
    savepoint = session.begin_nested()
    try:
        yield
        savepoint.commit()
    except DomainError as exc:
        savepoint.rollback()
        record_refusal(session, actor, exc)
        raise
