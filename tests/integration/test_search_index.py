"""Name search by prefix: the same answers as a plain "starts with", from an index, on both
databases."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from regenspine.auth.permissions import Role
from regenspine.db import unit_of_work
from regenspine.demo import load_demo
from regenspine.patients.models import Patient
from regenspine.patients.service import name_starts_with, search_statement

# Stored names around the edges of the range a prefix is turned into: the next code point,
# the last one before the surrogates (which cannot be stored), the highest one, and LIKE's
# own wildcard characters.
EDGE_NAMES = [
    "abc",
    "abcz",
    "abd",
    "ab",
    "ab\ud7ffx",
    "ab\ue000",
    "ab\U0010ffff",
    "ab\U0010ffffz",
    "a%c",
    "a_c",
    "a\\c",
    "zolc",
    "żółć",
    "o'brien",
    "anna-maria",
]


@pytest.fixture
def names(factory) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    with unit_of_work(factory) as s:
        load_demo(s, 120)
        ids = list(s.scalars(select(Patient.id).order_by(Patient.id)))
        for pid, name in zip(ids, EDGE_NAMES, strict=False):
            s.execute(update(Patient).where(Patient.id == pid).values(family_name_norm=name))
    with factory() as s:
        return [
            (pid, name) for pid, name in s.execute(select(Patient.id, Patient.family_name_norm))
        ]


def _found(session: Session, prefix: str) -> set[int]:
    dialect = session.get_bind().dialect.name
    return set(
        session.scalars(
            select(Patient.id).where(name_starts_with(dialect, Patient.family_name_norm, prefix))
        )
    )


PREFIX_CHARS = st.sampled_from(sorted({c for name in EDGE_NAMES for c in name} | set("kmnwy")))


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(prefix=st.text(PREFIX_CHARS, min_size=1, max_size=4))
def test_a_name_prefix_finds_exactly_the_names_that_start_with_it(factory, names, prefix):
    with factory() as s:
        assert _found(s, prefix) == {pid for pid, name in names if name.startswith(prefix)}


@pytest.mark.parametrize("prefix", ["ab", "abc", "ab\ud7ff", "ab\U0010ffff", "a%", "a_", "a\\"])
def test_edges_of_the_prefix_range(factory, names, prefix):
    with factory() as s:
        assert _found(s, prefix) == {pid for pid, name in names if name.startswith(prefix)}


def test_name_search_reads_the_name_indexes_not_the_whole_table(factory, staff, names):
    """The plan of the search statement, with its real parameters: each name prefix is looked
    up in the family- and given-name indexes. PostgreSQL is asked with sequential scans
    discouraged: its planner may rightly scan a table this small, the question is whether the
    indexes can answer the prefix at all (without the pattern operator class they cannot)."""
    with factory() as s:
        dialect = s.get_bind().dialect
        stmt = search_statement(dialect.name, staff.actor(Role.DOCTOR), "kowa")
        compiled = stmt.compile(dialect=dialect)
        connection = s.connection()
        if dialect.name == "sqlite":
            params = tuple(compiled.params[name] for name in compiled.positiontup or ())
            plan = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params)
        else:
            connection.execute(text("SET LOCAL enable_seqscan = off"))
            plan = connection.exec_driver_sql("EXPLAIN " + str(compiled), compiled.params)
        lines = "\n".join(str(row[-1]) for row in plan)
    assert "ix_patients_family_name_norm" in lines, lines
    assert "ix_patients_given_name_norm" in lines, lines
    assert "SCAN patients" not in lines and "Seq Scan" not in lines, lines
