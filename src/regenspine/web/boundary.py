"""The request boundary: one transaction per request, committed once, refusals audited."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from fastapi import Request
from fastapi.concurrency import contextmanager_in_threadpool, run_in_threadpool
from sqlalchemy import URL, Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

from regenspine.audit import service as audit
from regenspine.audit.appender import group_appender
from regenspine.auth.actor import ANONYMOUS, Actor
from regenspine.db import READER_CONNECTIONS, DeferredWork, deferred_work, read_only_session
from regenspine.errors import DomainError

log = logging.getLogger("regenspine.boundary")
F = TypeVar("F", bound=Any)
P = ParamSpec("P")
T = TypeVar("T")


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
    if refusal.then is not None:
        refusal.then(session)
    exc._refusal_recorded = True  # type: ignore[attr-defined]


def _forget_recorded(exc: DomainError) -> None:
    """For a boundary that has just rolled back whatever the refusal's record was written in."""
    exc._refusal_recorded = False  # type: ignore[attr-defined]


def request_actor(request: Request) -> Actor:
    actor = getattr(request.state, "actor", None)
    if actor is not None:
        return actor
    return Actor(user_id=None, username=ANONYMOUS.username, role=None, source_ip=client_ip(request))


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


POSTGRESQL_OPEN_TRANSACTIONS = 2
# Read-only transactions hold no lock (their audit records are appended afterwards, see
# audit/appender.py), so they cannot starve the worker threads the way writers could; the
# limit keeps them from crowding the interpreter, and is the number of PostgreSQL connections
# kept for them, so that none waits for one.
READ_ONLY_OPEN_TRANSACTIONS = READER_CONNECTIONS

# How many transactions of this process may be open at once on one database, per event loop
# (see transaction()).
_gates: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[URL, bool], asyncio.Semaphore]
] = weakref.WeakKeyDictionary()


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


def _admission(request: Request, *, read_only: bool = False) -> asyncio.Semaphore:
    engine: Engine = request.app.state.session_factory.kw["bind"]
    gates = _gates.setdefault(asyncio.get_running_loop(), {})
    key = (engine.url, read_only)
    gate = gates.get(key)
    if gate is None:
        limit = READ_ONLY_OPEN_TRANSACTIONS if read_only else open_transactions_limit(engine)
        gate = gates[key] = asyncio.Semaphore(limit)
    return gate


async def run_statements(
    session: Session, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """Runs `func(*args)`, whose statements use `session`, where they should run.

    A read-only transaction runs them on the event loop. On SQLite a WAL snapshot read waits
    for no lock a request holds (the one writer works beside it); on PostgreSQL a read waits
    for no row lock, its connections are its own (it never waits for one that a request
    needing this event loop holds), and the server cancels a statement that runs too long
    (db.py, _readers). Handing each read to a worker thread cost more than the read did: the
    thread and the event loop take turns for the interpreter, and waking a thread is a system
    call (SQLite: 2.0 ms of CPU per chart read against 0.9 ms on the loop; PostgreSQL: 2.1 ms
    against 1.2 ms; docs/benchmarks.md). Everything else runs in a worker thread: write
    transactions wait for locks, and take their connections from the shared pool."""
    if deferred_work(session) is not None:
        return func(*args, **kwargs)
    return await run_in_threadpool(func, *args, **kwargs)


def reads_only(endpoint: F) -> F:
    """Marks a route whose use case only reads (and audits the read): a request to it with an
    API token runs in a read-only transaction, and its audit records are group-committed. The
    route is a coroutine that runs its use case with run_statements."""
    endpoint.__regenspine_reads_only__ = True
    return endpoint


def _runs_read_only(request: Request) -> bool:
    # Bearer tokens only: a browser session's sign-in may write (expiry, MFA state) on any page.
    route = request.scope.get("route")
    return getattr(getattr(route, "endpoint", None), "__regenspine_reads_only__", False) and (
        request.headers.get("authorization", "").lower().startswith("bearer ")
    )


async def transaction(request: Request) -> AsyncIterator[Session]:
    """FastAPI dependency (scope="function"): commits before the response is sent, so a client
    never sees success for a write that did not reach the database. Routes marked reads_only
    run, for API tokens, in a read-only transaction whose audit records are group-committed
    (see _read_transaction).

    A request waits for its turn here, on the event loop, before it touches the database. Its
    database work runs in worker threads, and a transaction may hold a lock until it commits:
    the database write lock on SQLite, the audit chain's lock on PostgreSQL. Were requests
    admitted without a limit, enough of them could wait for that lock (or for a pooled
    connection) inside the shared worker threads that the holder of the lock would find no
    thread to finish in, and every request would stall until a timeout."""
    if _runs_read_only(request):
        work = DeferredWork()
        try:
            async with _admission(request, read_only=True):
                # A read-only transaction waits for no lock: it opens, reads and ends on the
                # event loop (see run_statements).
                with _read_transaction(request, work) as session:
                    yield session
        except DomainError:
            await _commit_deferred_refusal(request, work)
            raise
        if work:
            await group_appender(request.app.state.session_factory).commit(work)
        return
    # The commit runs on a thread outside the shared pool (FastAPI's rule for __exit__).
    async with (
        _admission(request),
        contextmanager_in_threadpool(_transaction(request)) as session,
    ):
        yield session


async def _commit_deferred_refusal(request: Request, work: DeferredWork) -> None:
    if work:
        try:
            await group_appender(request.app.state.session_factory).commit(work)
        except Exception:  # the refusal stands even if its record could not be written
            log.exception("could not record a refusal")


@contextmanager
def _read_transaction(request: Request, work: DeferredWork) -> Iterator[Session]:
    """A transaction that only reads; what it defers (its audit records, the token's last-use
    time) is written afterwards by the group appender, with other requests' records, and the
    response waits for that commit. A refusal is recorded the same way before it is sent."""
    session = read_only_session(request.app.state.session_factory, work)
    try:
        yield session
        # Nothing to commit; a flush still refuses a row the use case changed by mistake
        # (db.py, _refuse_flush_in_read_only). Closing the session returns the connection.
        session.flush()
    except DomainError as exc:
        session.rollback()
        work.discard()  # as a rollback would: only the refusal is recorded
        _forget_recorded(exc)
        record_refusal(session, request_actor(request), exc)
        raise
    except BaseException:
        session.rollback()
        work.discard()
        raise
    finally:
        session.close()


@contextmanager
def _transaction(request: Request) -> Iterator[Session]:
    factory = request.app.state.session_factory
    session: Session = factory()
    try:
        yield session
        session.commit()
    except DomainError as exc:
        session.rollback()
        if exc.refusal is not None:
            # The rollback also took back a record written for it further in (refusable, for a
            # page that shows the error page rather than its form): write it again, once.
            _forget_recorded(exc)
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
