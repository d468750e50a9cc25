"""Database engine, the declarative base, and the one place where a transaction commits."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event, inspect, text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from regenspine.errors import InvalidInput, Message
from regenspine.text import UNSTORABLE_MESSAGE, unstorable

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores instants in UTC and always hands back timezone-aware datetimes on both databases."""

    impl = DateTime
    cache_ok = True

    def __init__(self, timezone: bool = True) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: clinical timestamps must carry a timezone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


_engines: dict[str, Engine] = {}


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when a transaction starts (see "begin" below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Take the write lock at the start: every request may append to the audit chain, and
        # upgrading a read lock later would fail with "database is locked" instead of waiting.
        # Read-only requests use connections of their own that take no lock (_sqlite_readers).
        conn.exec_driver_sql("BEGIN IMMEDIATE")


SQLITE_CONNECT_ARGS = {"timeout": 15, "check_same_thread": False}


def _reader_engine(engine: Engine, connect_args: dict[str, Any]) -> Engine:
    """The readers' own pool for `engine`'s database: autocommit, and never waiting for a
    connection (past READER_CONNECTIONS it opens another)."""
    return create_engine(
        engine.url,
        pool_size=READER_CONNECTIONS,
        max_overflow=-1,
        isolation_level="AUTOCOMMIT",
        hide_parameters=True,
        connect_args=connect_args,
    )


def _sqlite_readers(engine: Engine) -> Engine:
    """SQLite connections for read-only requests, apart from the writers' pool.

    - SQLite itself refuses writes on them (PRAGMA query_only), behind the session's own
      refusal.
    - Autocommit: no BEGIN and no COMMIT. In WAL mode each SELECT reads a snapshot beside the
      writer and waits for no lock; the statements a request reads with (its token, then the
      chart) need no common snapshot.
    - Never waits for a connection, as the PostgreSQL readers (_readers).
    """
    readers = _reader_engine(engine, SQLITE_CONNECT_ARGS)

    @event.listens_for(readers, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA query_only=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.close()

    return readers


# A pooled connection unused for this long is tested before use. Testing every checkout (the
# pool's pre_ping) costs a round trip per request; a connection in steady use is known to work,
# and a server restart under load fails the statements in flight, after which the pool drops
# every connection it holds.
PING_AFTER_IDLE_SECONDS = 10.0


def _ping_after_idle(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["regenspine_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("regenspine_idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return  # new, or in steady use
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool replaces the connection and tries again
            raise DisconnectionError("a pooled connection no longer answers") from exc


def get_engine(url: str) -> Engine:
    engine = _engines.get(url)
    if engine is None:
        # Bound values are patient data, TOTP secrets and CSRF tokens: keep them out of the SQL
        # log and out of error messages (the 500 handler logs the exception).
        if url.startswith("sqlite"):
            path = url.removeprefix("sqlite:///")
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args=SQLITE_CONNECT_ARGS, hide_parameters=True)
            _configure_sqlite(engine)
        else:
            engine = create_engine(url, pool_size=10, max_overflow=10, hide_parameters=True)
            _ping_after_idle(engine)
        _engines[url] = engine
    return engine


def dispose_engines() -> None:
    for engine in [*_engines.values(), *_read_only_binds.values()]:
        engine.dispose()
    _engines.clear()
    _read_only_binds.clear()


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False, autoflush=True)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """The transaction boundary: services receive this session and never commit themselves."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


_READ_ONLY_KEY = "regenspine.read_only"


class WriteInReadOnlyTransaction(RuntimeError):
    """A use case wrote inside a transaction that was opened as read-only: a programming error."""


@dataclass
class DeferredWork:
    """What a read-only transaction leaves to be written after it: audit appends (the audit
    service's pending records) and small idempotent updates, applied together in one later
    write transaction that must commit before the request is answered."""

    appends: list[Any] = field(default_factory=list)
    writes: list[Callable[[Session], None]] = field(default_factory=list)

    def discard(self) -> None:
        self.appends.clear()
        self.writes.clear()

    def __bool__(self) -> bool:
        return bool(self.appends or self.writes)


def read_only_session(factory: sessionmaker[Session], work: DeferredWork) -> Session:
    """A session that only reads, in autocommit on a connection of the readers' own pool,
    which the database itself keeps from writing (see _readers and _sqlite_readers). The
    session refuses writes too; audit appends and deferred updates go to `work` instead.
    Opening it does no I/O: the connection is taken on first use."""
    session = factory(bind=_read_only_bind(factory.kw["bind"]))
    session.info[_READ_ONLY_KEY] = work
    return session


_read_only_binds: dict[Engine, Engine] = {}


def _read_only_bind(engine: Engine) -> Engine:
    bind = _read_only_binds.get(engine)
    if bind is None:
        if engine.dialect.name == "postgresql":
            bind = _readers(engine)
        elif engine.url.database in (None, "", ":memory:"):  # one connection holds it all
            bind = engine
        else:
            bind = _sqlite_readers(engine)
        _read_only_binds[engine] = bind
    return bind


# Read-only requests run their statements on the event loop (web/boundary.py::run_statements),
# where nothing may wait long: every request of the process waits with it.
# How many PostgreSQL connections the readers keep open; the event loop admits this many
# read-only requests at a time (web/boundary.py, READ_ONLY_OPEN_TRANSACTIONS).
READER_CONNECTIONS = 4
# A read on the event loop that takes longer than this is cancelled by the server (a lock held
# by a schema change, an overloaded server): the request fails, the process goes on serving.
READ_STATEMENT_TIMEOUT_MS = 2000
# A server that stops answering altogether (a network cut) is given up after about this long.
READER_NETWORK_TIMEOUT_S = 10


def _readers(engine: Engine) -> Engine:
    """PostgreSQL connections for read-only requests, apart from the writers' pool.

    - Never waits for a connection: a connection of the shared pool may be held by a request
      that needs this event loop to give it back. Past READER_CONNECTIONS the pool opens
      another rather than wait (the event loop admits no more than that many, so it only
      happens when one process runs several event loops).
    - Autocommit: under READ COMMITTED each statement reads its own snapshot, in a transaction
      or not, and without BEGIN and COMMIT the same reads cost two round trips fewer.
    - The server itself refuses writes on these connections (default_transaction_read_only),
      behind the session's own refusal; statements are cancelled after READ_STATEMENT_TIMEOUT_MS;
      TCP keepalives and a user timeout end a connection whose server no longer answers.
    """
    network = READER_NETWORK_TIMEOUT_S
    readers = _reader_engine(
        engine,
        {
            "connect_timeout": network // 2,
            "keepalives": 1,
            "keepalives_idle": network // 2,
            "keepalives_interval": 1,
            "keepalives_count": network // 2,
            "tcp_user_timeout": network * 1000,
        },
    )

    @event.listens_for(readers, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Set once per connection, with SET rather than a startup option, which connection
        # poolers such as PgBouncer may refuse.
        with dbapi_connection.cursor() as cursor:
            cursor.execute(
                f"SET statement_timeout = {int(READ_STATEMENT_TIMEOUT_MS)}; "
                "SET default_transaction_read_only = on"
            )
        if not dbapi_connection.autocommit:  # not yet switched to autocommit by the engine
            dbapi_connection.commit()

    _ping_after_idle(readers)
    return readers


def deferred_work(session: Session) -> DeferredWork | None:
    """The work a read-only transaction defers, or None in an ordinary transaction."""
    work = session.info.get(_READ_ONLY_KEY)
    return work if isinstance(work, DeferredWork) else None


@event.listens_for(Session, "before_flush")
def _refuse_flush_in_read_only(session: Session, _context: Any, _instances: Any) -> None:
    if _READ_ONLY_KEY in session.info and (session.new or session.dirty or session.deleted):
        raise WriteInReadOnlyTransaction("a read-only transaction tried to write rows")


@event.listens_for(Session, "before_flush")
def _refuse_unstorable_text(session: Session, _context: Any, _instances: Any) -> None:
    """No record is written with text a database cannot store or a page cannot show.

    The services check their fields with words of their own; this is the net under all of them,
    so that the same input is refused the same way on SQLite and PostgreSQL and nothing of the
    change is written (the whole flush is refused, before any statement).
    """
    errors: dict[str, Message] = {}
    for instance in (*session.new, *session.dirty):
        state = inspect(instance)
        for attribute in state.mapper.column_attrs:
            if attribute.key in state.dict and unstorable(state.dict[attribute.key]):
                errors[attribute.key] = Message(UNSTORABLE_MESSAGE)
    if errors:
        raise InvalidInput(errors)


@event.listens_for(Session, "do_orm_execute")
def _refuse_statement_in_read_only(state: Any) -> None:
    if _READ_ONLY_KEY in state.session.info and (
        state.is_insert or state.is_update or state.is_delete
    ):
        raise WriteInReadOnlyTransaction("a read-only transaction tried to write rows")


def serialise_appends(session: Session, name: str) -> None:
    """Serialise writers of one append-only sequence until the transaction ends.

    PostgreSQL takes a transaction-scoped advisory lock; SQLite already holds the database
    write lock from BEGIN IMMEDIATE, so nothing more is needed there.
    """
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def database_is_reachable(factory: sessionmaker[Session]) -> bool:
    """SELECT 1 outside any transaction: on SQLite a session would BEGIN IMMEDIATE and queue
    behind every writer, so a busy clinic would look like a dead database to the balancer."""
    engine: Engine = factory.kw["bind"]
    try:
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute("SELECT 1")
            cursor.fetchone()
            cursor.close()
        finally:
            connection.close()
        return True
    except Exception:
        return False
