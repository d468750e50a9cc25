"""Group commit for the audit appends of read-only requests: the records of every request
waiting at that moment are chained in one write transaction, under one lock, with one commit.

A chart read is a read plus an audit record, and the records take turns (one chain, no forks).
One transaction and one durable commit per record made the turns the bottleneck; here a request
hands its records over after its read and is answered only once the write transaction holding
them has committed. If that transaction fails, every request in it fails and none is answered
with its data. Nothing outlives the call: a process keeps no records of its own between
batches, so any number of processes and machines can append to the same chain.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from anyio import CapacityLimiter, to_thread
from sqlalchemy import URL, Engine
from sqlalchemy.orm import Session, sessionmaker

from regenspine.audit import service as audit
from regenspine.db import DeferredWork, unit_of_work

log = logging.getLogger("regenspine.audit")


class AuditNotRecorded(RuntimeError):
    """The write transaction holding this request's audit record did not commit."""


@dataclass
class _Waiting:
    work: DeferredWork
    done: asyncio.Future[None]


class GroupAppender:
    """One per event loop and database: a queue of waiting requests and at most one write
    transaction in progress."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory
        self._queue: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None

    async def commit(self, work: DeferredWork) -> None:
        """Returns once `work` is durably committed; raises AuditNotRecorded if it was not."""
        waiting = _Waiting(work, asyncio.get_running_loop().create_future())
        self._queue.append(waiting)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_batches())
        # A client that goes away does not stop the batch: its record is written all the same.
        await asyncio.shield(waiting.done)

    async def _write_batches(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                # A thread of its own, not one of the shared pool: requests must not be able to
                # take every thread while this transaction waits for the chain's lock.
                await to_thread.run_sync(self._write, batch, limiter=CapacityLimiter(1))
            except Exception as exc:
                log.exception("could not write a batch of %d audited requests", len(batch))
                for waiting in batch:
                    if not waiting.done.done():
                        error = AuditNotRecorded("the audit record could not be written")
                        error.__cause__ = exc
                        waiting.done.set_exception(error)
            else:
                for waiting in batch:
                    if not waiting.done.done():
                        waiting.done.set_result(None)

    def _write(self, batch: list[_Waiting]) -> None:
        engine: Engine = self._factory.kw["bind"]
        with _between_processes(engine):
            with unit_of_work(self._factory) as session:
                for waiting in batch:
                    for write in waiting.work.writes:
                        write(session)
                audit.append(session, [record for w in batch for record in w.work.appends])
            _keep_wal_small(engine)


@contextmanager
def _between_processes(engine: Engine) -> Iterator[None]:
    """On SQLite the appenders of several processes queue on a lock file beside the database
    before they ask for its write lock. SQLite makes a waiting writer poll with growing sleeps
    (up to 100 ms each); the lock file hands over as soon as the holder is done. This only
    orders the waiting: SQLite's write lock still serialises the appends, and where the file
    cannot be opened the appender goes without it."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    fd = None
    if database and database != ":memory:":
        try:
            fd = os.open(database + "-append.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            log.warning("no append lock file beside the database; appending without it")
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


# SQLite's automatic checkpoints cannot restart the write-ahead log while readers keep using
# it, and read-only requests overlap without pause under load: left alone the log grows by tens
# of megabytes a minute and every read slows down. Past this size the appender (the usual
# writer) empties it.
WAL_RESTART_BYTES = 16 * 1024 * 1024


def _keep_wal_small(engine: Engine) -> None:
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        return
    try:
        if os.path.getsize(database + "-wal") < WAL_RESTART_BYTES:
            return
    except OSError:
        return
    # Outside any transaction; waits (busy timeout) for the readers still in the log, which
    # take milliseconds; readers that start meanwhile read the database file.
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor.close()
    finally:
        connection.close()


_appenders: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[URL, GroupAppender]] = (
    weakref.WeakKeyDictionary()
)


def group_appender(factory: sessionmaker[Session]) -> GroupAppender:
    engine: Engine = factory.kw["bind"]
    appenders = _appenders.setdefault(asyncio.get_running_loop(), {})
    appender = appenders.get(engine.url)
    if appender is None:
        appender = appenders[engine.url] = GroupAppender(factory)
    return appender
