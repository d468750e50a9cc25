"""Writers started together, on both databases: the audit chain never forks, one patient is
registered once, one episode takes one step once, and desks sending forms to one server at once
are all answered.

Threads in one process are covered in test_audit_log.py; here each writer is its own process
with its own connection pool, as the workers of `regenspine serve --workers N` are.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from multiprocessing.pool import Pool
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from regenspine.audit import service as audit
from regenspine.audit.models import AuditRecord
from regenspine.auth.actor import SYSTEM_ACTOR, Actor
from regenspine.auth.permissions import Role
from regenspine.config import get_settings
from regenspine.db import dispose_engines, session_factory, unit_of_work
from regenspine.episodes import service as episodes
from regenspine.episodes.models import Episode, EpisodeEvent
from regenspine.episodes.states import EpisodeState, Step
from regenspine.errors import Conflict
from regenspine.patients import service as patients
from regenspine.patients.models import Patient
from tests.conftest import PASSWORD, person, serve_in_thread

WRITERS = 3
APPENDS_PER_WRITER = 25
ROUNDS = 6
R = TypeVar("R")
# Each race's outcomes: (stored, refused).
REGISTERED = ("registered", "refused as duplicate")
MOVED = ("moved", "refused as conflict")
CLAIMED = ("stored", "refused as duplicate")
BARRIER_TIMEOUT = 60.0
TASK_TIMEOUT = 180.0

_barrier: Any = None


def _keep_barrier(barrier: Any) -> None:
    global _barrier
    _barrier = barrier


@pytest.fixture(scope="module")
def writers() -> Iterator[tuple[Pool, Any]]:
    """WRITERS spawned processes (no state copied from the test process) and their start line."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    pool = ctx.Pool(WRITERS, initializer=_keep_barrier, initargs=(barrier,))
    try:
        yield pool, barrier
    finally:
        pool.terminate()
        pool.join()


def _run_together(writers: tuple[Pool, Any], task: Any, *args: Any) -> list[Any]:
    """Runs task(writer_number, *args) once in every writer process.

    Each writer blocks on the shared barrier inside the task, so no process can take two of
    these tasks: every one runs in a different process.
    """
    pool, barrier = writers
    barrier.reset()
    pending = [pool.apply_async(task, (n, *args)) for n in range(WRITERS)]
    return [p.get(timeout=TASK_TIMEOUT) for p in pending]


def _append_audit_records(writer: int, url: str, count: int) -> list[str]:
    factory = session_factory(url)
    problems = []
    _barrier.wait(timeout=BARRIER_TIMEOUT)
    try:
        for i in range(count):
            try:
                with unit_of_work(factory) as session:
                    audit.record(
                        session,
                        SYSTEM_ACTOR,
                        "test.process_append",
                        entity_type="test",
                        entity_id=f"{writer}-{i}",
                    )
            except Exception as exc:  # noqa: BLE001 (reported to the test, which fails on it)
                problems.append(repr(exc))
    finally:
        dispose_engines()
    return problems


def test_audit_appends_from_several_processes_at_once_keep_one_unbroken_chain(
    factory, database_url, writers
):
    """ASVS V16.4.2 (logs cannot be modified), V15.4.2 (check and act as one atomic step):
    writers in separate processes neither lose a record nor fork the hash chain."""
    problems = _run_together(writers, _append_audit_records, database_url, APPENDS_PER_WRITER)

    assert problems == [[]] * WRITERS
    total = WRITERS * APPENDS_PER_WRITER
    with factory() as s:
        seqs = s.scalars(select(AuditRecord.seq).order_by(AuditRecord.seq)).all()
        written = set(
            s.scalars(
                select(AuditRecord.entity_id).where(AuditRecord.action == "test.process_append")
            )
        )
        shared_links = s.execute(
            select(AuditRecord.prev_hash, func.count())
            .group_by(AuditRecord.prev_hash)
            .having(func.count() > 1)
        ).all()
        result = audit.verify(s)
    assert seqs == list(range(1, total + 1))
    assert written == {f"{w}-{i}" for w in range(WRITERS) for i in range(APPENDS_PER_WRITER)}
    assert shared_links == [], "two records continue the same record: the chain forked"
    assert result.intact, result.first_break
    assert result.records == total


def _same_patient(round_: int) -> dict[str, str]:
    birth = date(1950, 3, 1) + timedelta(days=round_)
    return person(
        "Ewa",
        "Nowak",
        birth,
        round_,
        "female",
    )


def _rounds(
    url: str,
    rounds: Iterable[R],
    write: Callable[[Session, R], object],
    refusals: tuple[type[Exception], ...],
    outcomes: tuple[str, str],
) -> list[str]:
    """One write per round, in its own transaction, released at the barrier together with the
    other writers' writes of the same round. Each round's outcome is the first of `outcomes`
    (stored), the second (one of `refusals`), or the unexpected exception itself."""
    factory = session_factory(url)
    stored, refused = outcomes
    results = []
    try:
        for round_ in rounds:
            _barrier.wait(timeout=BARRIER_TIMEOUT)
            try:
                with unit_of_work(factory) as session:
                    write(session, round_)
                results.append(stored)
            except refusals:
                results.append(refused)
            except Exception as exc:  # noqa: BLE001 (reported to the test, which fails on it)
                results.append(repr(exc))
    finally:
        dispose_engines()
    return results


def _one_stored_per_round(outcomes: list[list[str]], names: tuple[str, str]) -> None:
    """In every round exactly one writer's write was stored and the others were refused."""
    stored, refused = names
    for round_ in range(ROUNDS):
        this_round = Counter(by_writer[round_] for by_writer in outcomes)
        assert this_round == {stored: 1, refused: WRITERS - 1}, (round_, this_round)


def _register(writer: int, url: str, actor: Actor, rounds: int) -> list[str]:
    return _rounds(
        url,
        range(rounds),
        lambda session, round_: patients.register_patient(session, actor, _same_patient(round_)),
        (patients.PossibleDuplicate,),
        REGISTERED,
    )


def test_the_same_patient_registered_at_two_desks_at_once_is_registered_once(
    factory, staff, database_url, writers
):
    """ASVS V15.4.2 (no time-of-check to time-of-use race), V2.3.4 (no double booking): the
    duplicate check and the insert of two simultaneous registrations cannot interleave."""
    outcomes = _run_together(
        writers, _register, database_url, staff.actor(Role.COORDINATOR), ROUNDS
    )

    _one_stored_per_round(outcomes, REGISTERED)
    with factory() as s:
        per_pesel = Counter(s.scalars(select(Patient.national_id)))
        created = s.scalar(
            select(func.count())
            .select_from(AuditRecord)
            .where(AuditRecord.action == "patient.create")
        )
        result = audit.verify(s)
    assert per_pesel == {_same_patient(r)["national_id"]: 1 for r in range(ROUNDS)}
    assert created == ROUNDS
    assert result.intact, result.first_break


def _cancel(writer: int, url: str, actor: Actor, episode_ids: list[int]) -> list[str]:
    def cancel(session: Session, episode_id: int) -> None:
        episodes.advance(
            session,
            actor,
            episode_id,
            Step.CANCEL,
            EpisodeState.CANCELLED,
            reason=f"Cancelled at desk {writer}",
            expected_state=EpisodeState.REFERRED,
        )

    return _rounds(url, episode_ids, cancel, (Conflict,), MOVED)


def test_one_episode_moved_from_two_desks_at_once_takes_the_step_once(
    factory, staff, database_url, writers
):
    """ASVS V15.4.2 (atomic checks on shared resources): the row lock lets one of two
    simultaneous cancellations through; the other is refused as a conflict, not lost or
    doubled."""
    coordinator = staff.actor(Role.COORDINATOR)
    episode_ids = []
    with unit_of_work(factory) as s:
        for round_ in range(ROUNDS):
            patient = patients.register_patient(s, coordinator, _same_patient(round_))
            episode = episodes.open_episode(s, coordinator, patient.id, "disc_protrusion", "lumbar")
            episode_ids.append(episode.id)

    outcomes = _run_together(writers, _cancel, database_url, coordinator, episode_ids)

    _one_stored_per_round(outcomes, MOVED)
    with factory() as s:
        rows = s.scalars(select(Episode).where(Episode.id.in_(episode_ids))).all()
        steps = Counter(
            s.execute(
                select(EpisodeEvent.episode_id, EpisodeEvent.step).where(
                    EpisodeEvent.episode_id.in_(episode_ids)
                )
            ).all()
        )
        cancel_audits = s.scalar(
            select(func.count())
            .select_from(AuditRecord)
            .where(AuditRecord.action == "episode.cancel")
        )
        result = audit.verify(s)
    assert {(e.state, e.version) for e in rows} == {(EpisodeState.CANCELLED.value, 2)}
    assert steps == {(i, s): 1 for i in episode_ids for s in ("open", "cancel")}
    assert cancel_audits == ROUNDS
    assert result.intact, result.first_break


DESKS = 4
FORMS_PER_DESK = 6


@contextmanager
def one_worker(database_url: str) -> Iterator[str]:
    """The application served by one uvicorn event loop in a thread, as one worker serves it.

    On PostgreSQL its connections give up a lock wait after 5 s (lock_timeout): a request that
    blocks the event loop then fails with a 500 instead of hanging the worker, and this test,
    for good.
    """
    from regenspine.app import create_app

    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        url = url.update_query_dict({"options": "-c lock_timeout=5000"})
    app = create_app(
        get_settings().model_copy(
            update={"database_url": url.render_as_string(hide_password=False)}
        )
    )
    try:
        with serve_in_thread(app) as base_url:
            yield base_url
    finally:
        dispose_engines()


def _signed_in_desk(base_url: str, username: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=base_url, timeout=60)
    client.get("/login")
    signed_in = client.post(
        "/login",
        data={"username": username, "password": PASSWORD, "csrf_token": client.cookies["rs_csrf"]},
    )
    assert signed_in.status_code == 303, signed_in.text
    return client, client.get("/api/v1/me").json()["csrf_token"]


def test_desks_sending_registration_forms_to_one_server_at_once_are_all_answered(
    factory, staff, database_url
):
    """ASVS V15.4.3 (locks never leave requests stuck waiting on each other), V16.5.3 (fails
    securely): forms that wait for the same lock (the MRN counter, the audit chain) on one
    worker's event loop are all registered, none refused, none stalled until a timeout."""
    with one_worker(database_url) as base_url:
        desks = [_signed_in_desk(base_url, staff.username(Role.COORDINATOR)) for _ in range(DESKS)]
        answers: list[object] = []
        start = threading.Barrier(DESKS)

        def send_forms(desk: int) -> None:
            client, csrf = desks[desk]
            start.wait(timeout=BARRIER_TIMEOUT)
            for i in range(FORMS_PER_DESK):
                form = _same_patient(100 + desk * FORMS_PER_DESK + i) | {"csrf_token": csrf}
                try:
                    answers.append(client.post("/patients/new", data=form).status_code)
                except httpx.TransportError as exc:
                    answers.append(repr(exc))

        threads = [threading.Thread(target=send_forms, args=(d,)) for d in range(DESKS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for client, _ in desks:
            client.close()

    assert answers == [303] * (DESKS * FORMS_PER_DESK)
    with factory() as s:
        registered = s.scalar(select(func.count()).select_from(Patient))
        result = audit.verify(s)
    assert registered == DESKS * FORMS_PER_DESK
    assert result.intact, result.first_break


def _claim_identifier(
    writer: int, url: str, actor: Actor, rounds: list[tuple[dict[str, str], int, int]]
) -> list[str]:
    """Writer 0 registers the person; writers 1 and 2 correct another record to their PESEL."""

    def claim(session: Session, round_: tuple[dict[str, str], int, int]) -> None:
        person, first, second = round_
        if writer == 0:
            patients.register_patient(session, actor, person)
        else:
            patients.amend_patient(
                session,
                actor,
                first if writer == 1 else second,
                {"id_type": "pesel", "national_id": person["national_id"]},
                "Identifier read from the patient's ID card",
            )

    return _rounds(
        url,
        rounds,
        claim,
        (patients.PossibleDuplicate, patients.InvalidInput),
        CLAIMED,
    )


def test_one_identifier_claimed_by_a_registration_and_two_corrections_at_once_is_stored_once(
    factory, staff, database_url, writers
):
    """ASVS V15.4.2: a correction that gives a record a PESEL takes turns with registrations,
    so two records never end up with the same identifier."""
    coordinator = staff.actor(Role.COORDINATOR)
    rounds = []
    with unit_of_work(factory) as s:
        for round_ in range(ROUNDS):
            person = _same_patient(round_)
            ids = [
                patients.register_patient(
                    s,
                    coordinator,
                    person
                    | {
                        "id_type": "passport",
                        "national_id": f"PX{round_}{n}",
                        "id_country": "DE",
                        "given_name": ("Ewa-Maria", "Ewelina")[n - 1],
                    },
                ).id
                for n in (1, 2)
            ]
            rounds.append((person, ids[0], ids[1]))
    outcomes = _run_together(writers, _claim_identifier, database_url, coordinator, rounds)

    _one_stored_per_round(outcomes, CLAIMED)
    with factory() as s:
        per_pesel = Counter(
            s.scalars(select(Patient.national_id).where(Patient.id_type == "pesel"))
        )
    assert per_pesel == {person["national_id"]: 1 for person, _, _ in rounds}


GROUPS_PER_WRITER = 3
REQUESTS_PER_GROUP = 10


def _append_in_groups_or_alone(writer: int, url: str, _: None) -> list[str]:
    """Writer 0 appends one record per transaction, as a request that writes does; the others
    hand over groups of records at once, as concurrent chart reads do."""
    import asyncio

    from regenspine.audit.appender import GroupAppender
    from regenspine.db import DeferredWork

    if writer == 0:
        return _append_audit_records(writer, url, GROUPS_PER_WRITER * REQUESTS_PER_GROUP)
    factory = session_factory(url)
    appender = GroupAppender(factory)
    problems: list[str] = []

    def work(group: int, n: int) -> DeferredWork:
        deferred = DeferredWork()
        deferred.appends.append(
            audit.PendingAppend(
                actor_user_id=None,
                actor_username="system",
                actor_role="",
                action="test.process_append",
                entity_type="test",
                entity_id=f"{writer}-{group * REQUESTS_PER_GROUP + n}",
                patient_id=None,
                source_ip="",
                outcome="success",
                detail="{}",
            )
        )
        return deferred

    async def groups() -> None:
        for group in range(GROUPS_PER_WRITER):
            results = await asyncio.gather(
                *(appender.commit(work(group, n)) for n in range(REQUESTS_PER_GROUP)),
                return_exceptions=True,
            )
            problems.extend(repr(r) for r in results if r is not None)

    _barrier.wait(timeout=BARRIER_TIMEOUT)
    try:
        asyncio.run(groups())
    finally:
        dispose_engines()
    return problems


def test_group_appends_from_several_processes_beside_single_appends_keep_one_chain(
    factory, database_url, writers
):
    """ASVS V16.4.2, V15.4.2: processes that append groups of chart-read records in one
    transaction each, beside a process appending one record per transaction, lose no record
    and never fork the chain."""
    problems = _run_together(writers, _append_in_groups_or_alone, database_url, None)

    assert problems == [[]] * WRITERS
    per_writer = GROUPS_PER_WRITER * REQUESTS_PER_GROUP
    with factory() as s:
        seqs = s.scalars(select(AuditRecord.seq).order_by(AuditRecord.seq)).all()
        written = set(s.scalars(select(AuditRecord.entity_id)))
        result = audit.verify(s)
    assert seqs == list(range(1, WRITERS * per_writer + 1))
    assert written == {f"{w}-{i}" for w in range(WRITERS) for i in range(per_writer)}
    assert result.intact, result.first_break
