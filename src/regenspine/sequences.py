"""Named gap-free counters (medical record numbers, donation numbers), advanced under a lock."""

from __future__ import annotations

from sqlalchemy import Integer, String, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from regenspine.db import Base


class Counter(Base):
    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


def next_values(session: Session, name: str, count: int = 1) -> range:
    """Reserves `count` consecutive numbers; concurrent callers wait on the row lock."""
    counter = lock_counter(session, name)
    start = counter.value + 1
    counter.value += count
    session.flush()
    return range(start, start + count)


def lock_counter(session: Session, name: str) -> Counter:
    """Takes the counter's row lock until commit, without reserving a number: callers that
    must see each other's work (e.g. the duplicate-identifier check) take turns on it."""
    counter = session.scalar(select(Counter).where(Counter.name == name).with_for_update())
    if counter is None:
        # Two first-ever callers may race to create the row: let the database keep one.
        dialect = session.get_bind().dialect.name
        insert_ = postgresql_insert if dialect == "postgresql" else sqlite_insert
        session.execute(
            insert_(Counter)
            .values(name=name, value=0)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        counter = session.scalar(select(Counter).where(Counter.name == name).with_for_update())
        assert counter is not None
    return counter
