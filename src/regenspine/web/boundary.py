"""The request boundary: one transaction per request, committed once, refusals audited."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

from fastapi import Request
from fastapi.concurrency import contextmanager_in_threadpool
from sqlalchemy import URL, Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

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


POSTGRESQL_OPEN_TRANSACTIONS = 2

# How many transactions of this process may be open at once on one database, per event loop
# (see transaction()).
_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[URL, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


def open_transactions_limit(engine: Engine) -> int:
    """SQLite: one, since every transaction holds the database write lock from its first
    statement (BEGIN IMMEDIATE). PostgreSQL: two. Nearly every request appends to the audit
    chain, whose lock is held from the append to the commit; each transaction admitted beside
    the holder competes with it for the interpreter, so the holder commits later and everyone
    waits longer (64 clients, 2 workers: 10 per process served about half the chart reads per
    second that 1 did, 2 about three quarters; see docs/benchmarks.md). Two rather than one, so
    a slow request (a PDF, an export) does not hold up its whole process."""
    if engine.dialect.name == "sqlite":
        return 1
    pool = engine.pool
    return min(POSTGRESQL_OPEN_TRANSACTIONS, pool.size() if isinstance(pool, QueuePool) else 10)


def _admission(request: Request) -> asyncio.Semaphore:
    engine: Engine = request.app.state.session_factory.kw["bind"]
    gates = _gates.setdefault(asyncio.get_running_loop(), {})
    gate = gates.get(engine.url)
    if gate is None:
        gate = gates[engine.url] = asyncio.Semaphore(open_transactions_limit(engine))
    return gate


async def transaction(request: Request) -> AsyncIterator[Session]:
    """FastAPI dependency (scope="function"): commits before the response is sent, so a client
    never sees success for a write that did not reach the database.

    A request waits for its turn here, on the event loop, before it touches the database. Its
    database work runs in worker threads, and a transaction may hold a lock until it commits:
    the database write lock on SQLite, the audit chain's lock on PostgreSQL. Were requests
    admitted without a limit, enough of them could wait for that lock (or for a pooled
    connection) inside the shared worker threads that the holder of the lock would find no
    thread to finish in, and every request would stall until a timeout."""
    # The commit runs on a thread outside the shared pool (FastAPI's rule for __exit__).
    async with (
        _admission(request),
        contextmanager_in_threadpool(_transaction(request)) as session,
    ):
        yield session


@contextmanager
def _transaction(request: Request) -> Iterator[Session]:
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
