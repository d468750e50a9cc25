"""The audit log's hash chain: an intact log verifies, and every kind of tampering is caught."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from regenspine.audit.chain import (
    GENESIS_HASH,
    BreakKind,
    ChainEntry,
    compute_hash,
    verify_chain,
)

START = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)

# Fields a tamperer could change in a stored record (row_id is the database's own key).
CONTENT_FIELDS = (
    "seq",
    "at",
    "actor_user_id",
    "actor_username",
    "actor_role",
    "action",
    "entity_type",
    "entity_id",
    "patient_id",
    "source_ip",
    "outcome",
    "detail",
    "prev_hash",
    "hash",
)

texts = st.text(max_size=12)
hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@st.composite
def record_contents(draw: st.DrawFn) -> dict:
    return {
        "at": draw(
            st.datetimes(
                min_value=datetime(2020, 1, 1),
                max_value=datetime(2035, 1, 1),
                timezones=st.just(UTC),
            )
        ),
        "actor_user_id": draw(st.one_of(st.none(), st.integers(min_value=1, max_value=10**6))),
        "actor_username": draw(texts),
        "actor_role": draw(st.sampled_from(["", "doctor", "nurse", "admin", "auditor"])),
        "action": draw(st.sampled_from(["patient.create", "patient.amend", "auth.login"])),
        "entity_type": draw(texts),
        "entity_id": draw(texts),
        "patient_id": draw(st.one_of(st.none(), st.integers(min_value=1, max_value=10**6))),
        "source_ip": draw(st.sampled_from(["", "10.0.0.7", "2001:db8::1"])),
        "outcome": draw(st.sampled_from(["success", "denied", "failure"])),
        "detail": draw(texts),
    }


def write_chain(contents: list[dict]) -> list[ChainEntry]:
    """What the audit writer does: number the records and link each to the one before."""
    chain: list[ChainEntry] = []
    prev_hash = GENESIS_HASH
    for seq, fields in enumerate(contents, start=1):
        entry = ChainEntry(seq=seq, prev_hash=prev_hash, hash="", row_id=1000 + seq, **fields)
        entry = dataclasses.replace(entry, hash=compute_hash(prev_hash, entry))
        chain.append(entry)
        prev_hash = entry.hash
    return chain


def simple_chain(n: int) -> list[ChainEntry]:
    return write_chain(
        [
            {
                "at": START + timedelta(minutes=i),
                "actor_user_id": 3,
                "actor_username": "dr.nowak",
                "actor_role": "doctor",
                "action": "patient.amend",
                "entity_type": "patient",
                "entity_id": str(i),
                "patient_id": i,
                "source_ip": "10.0.0.7",
                "outcome": "success",
                "detail": '{"field": "phone"}',
            }
            for i in range(n)
        ]
    )


def forge(entry: ChainEntry, **changes) -> ChainEntry:
    """A record the forger rewrote and re-hashed so that it is consistent with itself."""
    forged = dataclasses.replace(entry, **changes)
    return dataclasses.replace(forged, hash=compute_hash(forged.prev_hash, forged))


chains = st.lists(record_contents(), min_size=0, max_size=30).map(write_chain)


def chains_of_at_least(n: int):
    return st.lists(record_contents(), min_size=n, max_size=30).map(write_chain)


@settings(max_examples=60, deadline=None)
@given(chains)
def test_an_untouched_log_verifies_and_reports_its_head(chain):
    result = verify_chain(chain)
    assert result.intact
    assert result.first_break is None
    assert result.records == len(chain)
    assert result.head_hash == (chain[-1].hash if chain else GENESIS_HASH)


def test_an_empty_log_is_intact_with_the_genesis_head():
    result = verify_chain([])
    assert result.intact
    assert result.records == 0
    assert result.head_hash == "0" * 64


def test_the_first_record_links_to_the_genesis_hash():
    chain = simple_chain(1)
    assert chain[0].prev_hash == GENESIS_HASH
    assert verify_chain(chain).head_hash == chain[0].hash != GENESIS_HASH


@st.composite
def a_different_value(draw: st.DrawFn, entry: ChainEntry, field: str):
    current = getattr(entry, field)
    if field == "seq":
        value = current + draw(st.integers(min_value=1, max_value=50) | st.integers(-50, -1))
    elif field == "at":
        shift = draw(st.integers(min_value=1, max_value=10**10) | st.integers(-(10**10), -1))
        value = current + timedelta(microseconds=shift)
    elif field in ("actor_user_id", "patient_id"):
        value = draw(st.none() | st.integers(min_value=0, max_value=10**6))
    elif field in ("prev_hash", "hash"):
        value = draw(hex64)
    else:
        value = draw(st.text(max_size=12))
    if value == current:
        value = draw(st.nothing())
    return value


@settings(max_examples=150, deadline=None)
@given(chains_of_at_least(1), st.data())
def test_changing_any_field_of_any_record_is_caught_as_an_edit_of_that_record(chain, data):
    index = data.draw(st.integers(min_value=0, max_value=len(chain) - 1), label="index")
    field = data.draw(st.sampled_from(CONTENT_FIELDS), label="field")
    value = data.draw(a_different_value(chain[index], field), label="value")
    original = chain[index]
    chain[index] = dataclasses.replace(original, **{field: value})

    result = verify_chain(chain)

    assert not result.intact
    assert result.first_break.kind is BreakKind.EDITED
    assert result.first_break.row_id == original.row_id
    if field != "seq":
        assert result.first_break.seq == original.seq
    # Everything before the edit was still vouched for.
    assert result.head_hash == (chain[index - 1].hash if index else GENESIS_HASH)


def test_changing_the_patient_of_a_record_is_caught():
    chain = simple_chain(5)
    chain[2] = dataclasses.replace(chain[2], patient_id=99)
    result = verify_chain(chain)
    assert result.first_break.kind is BreakKind.EDITED
    assert result.first_break.seq == 3
    assert result.first_break.row_id == 1003


def test_a_prev_hash_overwritten_with_non_hex_text_is_reported_rather_than_crashing():
    chain = simple_chain(3)
    chain[1] = dataclasses.replace(chain[1], prev_hash="é" * 64)
    result = verify_chain(chain)
    assert not result.intact
    assert result.first_break.seq == 2


@settings(max_examples=80, deadline=None)
@given(chains_of_at_least(2), st.data())
def test_deleting_a_record_is_caught_at_the_record_after_it(chain, data):
    index = data.draw(st.integers(min_value=0, max_value=len(chain) - 2), label="deleted index")
    deleted = chain.pop(index)

    result = verify_chain(chain)

    assert not result.intact
    assert result.first_break.kind is BreakKind.MISSING
    assert result.first_break.seq == deleted.seq + 1
    assert str(deleted.seq) in result.first_break.explanation


def test_deleting_the_newest_record_changes_the_head_hash_that_was_published():
    chain = simple_chain(4)
    published_head = verify_chain(chain).head_hash
    truncated = verify_chain(chain[:-1])
    assert truncated.head_hash != published_head


def test_deleting_a_record_and_renumbering_the_rest_is_caught():
    chain = simple_chain(5)
    del chain[1]
    renumbered = chain[:1] + [dataclasses.replace(e, seq=e.seq - 1) for e in chain[1:]]
    result = verify_chain(renumbered)
    assert not result.intact
    assert result.first_break.seq == 2


@settings(max_examples=80, deadline=None)
@given(chains_of_at_least(2), st.data())
def test_swapping_two_neighbouring_records_is_caught_at_the_swap(chain, data):
    i = data.draw(st.integers(min_value=0, max_value=len(chain) - 2), label="swap index")
    chain[i], chain[i + 1] = chain[i + 1], chain[i]

    result = verify_chain(chain)

    assert not result.intact
    assert result.first_break.seq in (i + 1, i + 2)
    assert result.head_hash == (chain[i - 1].hash if i else GENESIS_HASH)


def test_swapping_two_records_and_their_sequence_numbers_is_caught():
    chain = simple_chain(4)
    a, b = chain[1], chain[2]
    chain[1], chain[2] = dataclasses.replace(b, seq=2), dataclasses.replace(a, seq=3)
    result = verify_chain(chain)
    assert not result.intact
    assert result.first_break.seq == 2


@settings(max_examples=80, deadline=None)
@given(chains_of_at_least(1), st.data())
def test_a_forged_record_that_links_to_nothing_is_caught_where_it_was_inserted(chain, data):
    index = data.draw(st.integers(min_value=0, max_value=len(chain) - 1), label="insert index")
    true_prev = chain[index].prev_hash
    wrong_prev = data.draw(hex64.filter(lambda h: h != true_prev), label="wrong prev")
    forged = forge(chain[index], prev_hash=wrong_prev, detail="forged")
    assert forged.hash == compute_hash(forged.prev_hash, forged)  # self-consistent
    chain[index] = forged

    result = verify_chain(chain)

    assert not result.intact
    assert result.first_break.seq == index + 1
    assert result.first_break.kind in (BreakKind.INSERTED, BreakKind.REORDERED)


def test_a_forged_record_pointing_back_at_an_older_record_is_caught():
    chain = simple_chain(5)
    chain[3] = forge(chain[3], prev_hash=chain[1].hash)  # seq 4 claims to follow seq 2
    result = verify_chain(chain)
    assert not result.intact
    assert result.first_break.seq == 4


def test_a_forged_record_and_its_successor_rehashed_are_still_caught_at_the_forgery():
    chain = simple_chain(5)
    chain[2] = forge(chain[2], prev_hash="f" * 64, action="patient.delete")
    chain[3] = forge(chain[3], prev_hash=chain[2].hash)
    result = verify_chain(chain)
    assert result.first_break.seq == 3


@settings(max_examples=80, deadline=None)
@given(chains_of_at_least(2), st.data())
def test_only_the_first_of_several_breaks_is_reported(chain, data):
    first = data.draw(st.integers(min_value=0, max_value=len(chain) - 2), label="first")
    later = data.draw(st.integers(min_value=first + 1, max_value=len(chain) - 1), label="later")
    chain[later] = dataclasses.replace(chain[later], detail=chain[later].detail + "!")
    chain[first] = dataclasses.replace(chain[first], detail=chain[first].detail + "?")

    result = verify_chain(chain)

    assert result.first_break.seq == first + 1
    assert result.first_break.row_id == chain[first].row_id


def test_the_same_moment_written_in_another_time_zone_hashes_the_same():
    # canonical_payload promises "timestamps to the microsecond in UTC".
    chain = simple_chain(1)
    warsaw = timezone(timedelta(hours=1))
    same_instant = dataclasses.replace(chain[0], at=chain[0].at.astimezone(warsaw))
    assert same_instant.at == chain[0].at
    assert compute_hash(GENESIS_HASH, same_instant) == chain[0].hash
