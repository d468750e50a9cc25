"""The server killed with SIGKILL in the middle of a busy moment, on SQLite and PostgreSQL:
every write it acknowledged is still there, nothing is half-written, the audit chain is
intact, and the restarted server carries on.

The real `regenspine serve --workers 2` runs as its own process group; client threads drive
registrations and pathway steps through the JSON API with scoped API tokens; the whole group
is killed while requests are in flight. A 2xx answer is sent only after the commit (see
web/boundary.py), so each one is a promise this test holds the database to.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from regenspine.audit import service as audit
from regenspine.audit.models import AuditRecord
from regenspine.auth import service as auth
from regenspine.auth.permissions import Permission, Role
from regenspine.consultations.models import Consultation
from regenspine.db import session_factory, unit_of_work
from regenspine.eligibility.models import EligibilityDecision, RedFlagScreening
from regenspine.episodes.models import Episode, EpisodeEvent
from regenspine.episodes.states import EpisodeState, Step
from regenspine.patients.models import Patient
from regenspine.sequences import Counter as NamedCounter
from tests.conftest import free_port, make_staff, new_database, person
from tests.integration.test_pathway import good_consultation, no_red_flags

CLI = [sys.executable, "-m", "regenspine.cli"]
CLIENTS = 4
# Kill once this many writes have been acknowledged (about a second of load here).
ACKNOWLEDGED_BEFORE_KILL = 30
# Failure deadlines only, generous because the machine may be shared and busy.
READY_TIMEOUT = 120.0
LOAD_TIMEOUT = 120.0
REQUEST_TIMEOUT = 60.0

TOKEN_SCOPES: dict[Role, list[Permission]] = {
    Role.COORDINATOR: [
        Permission.PATIENT_CREATE,
        Permission.PATIENT_READ,
        Permission.EPISODE_OPEN,
        Permission.EPISODE_READ,
        Permission.EPISODE_ADVANCE,
    ],
    Role.DOCTOR: [
        Permission.PATIENT_READ,
        Permission.EPISODE_READ,
        Permission.EPISODE_ADVANCE,
        Permission.CONSULTATION_RECORD,
        Permission.CLINICAL_TEXT_READ,
    ],
}

# Every stored row of these kinds was written with exactly one audit record of this action in
# the same transaction. Custody events and PROM submissions join this list (and _journey)
# when those domains exist.
AUDITED_ROWS: list[tuple[Any, str]] = [
    (Patient, "patient.create"),
    (Consultation, "consultation.record"),
    (RedFlagScreening, "red_flags.screen"),
    (EligibilityDecision, "eligibility.decide"),
]
EPISODE_STEP_ACTIONS = {"episode.open"} | {f"episode.{s.value}" for s in Step}


@pytest.fixture(params=["sqlite", "postgresql"])
def crash_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of the test's own, dropped afterwards."""
    from regenspine.cli import upgrade_database

    with new_database(request.param, tmp_path / "clinic.db") as url:
        upgrade_database(url)
        yield url


def _env(url: str) -> dict[str, str]:
    return os.environ | {"REGENSPINE_DATABASE_URL": url, "REGENSPINE_ENV": "development"}


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path
    group_killed: bool = False

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        """SIGKILL to the whole group: the supervisor and both workers die at the same instant
        (also workers left behind by a supervisor that ended on its own)."""
        if not self.group_killed:
            self.group_killed = True
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@contextmanager
def serving(url: str, log: Path) -> Iterator[Server]:
    """`regenspine serve --workers 2` in its own process group, killed whatever happens."""
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
            env=_env(url),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        yield server
    finally:
        server.kill()


def wait_until_ready(server: Server) -> httpx.Response:
    deadline = time.monotonic() + READY_TIMEOUT
    last: object = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"the server exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            response = httpx.get(server.base_url + "/healthz", timeout=5)
            if response.status_code == 200:
                return response
            last = response.status_code
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.1)
    pytest.fail(f"the server did not become ready ({last!r}):\n{server.log_tail()}")


@dataclass
class Ledger:
    """What the server acknowledged, shared by the client threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    numbers: Iterator[int] = field(default_factory=itertools.count)
    acknowledged: int = 0
    in_flight: int = 0
    unanswered: int = 0  # requests cut off by the kill: their outcome is unknown
    killed: threading.Event = field(default_factory=threading.Event)
    unexpected: list[str] = field(default_factory=list)
    patients: dict[int, dict[str, Any]] = field(default_factory=dict)
    # Episode id -> (step, from, to) of every event the last acknowledged answer showed.
    timelines: dict[int, list[tuple[str, str | None, str]]] = field(default_factory=dict)
    # Episode id -> (consultation version, state) of an acknowledged assessment.
    assessments: dict[int, tuple[int, str]] = field(default_factory=dict)
    # Patient id -> chart reads answered with the chart (each promises its audit record).
    chart_reads: Counter[int] = field(default_factory=Counter)

    def next_number(self) -> int:
        with self.lock:
            return next(self.numbers)


class ServerGone(Exception):
    """The request got no answer: the server was killed (or died)."""


class Desk:
    """One client thread's connection, posting as coordinator or doctor."""

    def __init__(self, base_url: str, tokens: dict[Role, str], ledger: Ledger) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT)
        self.tokens = tokens
        self.ledger = ledger

    def post(self, role: Role, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        return self.send(role, "POST", path, body)

    def get(self, role: Role, path: str) -> dict[str, Any] | None:
        return self.send(role, "GET", path)

    def send(
        self, role: Role, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        ledger = self.ledger
        with ledger.lock:
            ledger.in_flight += 1
        try:
            response = self.client.request(
                method, path, json=body, headers={"Authorization": f"Bearer {self.tokens[role]}"}
            )
        except httpx.TransportError as exc:
            with ledger.lock:
                ledger.unanswered += 1
                if not ledger.killed.is_set():
                    ledger.unexpected.append(f"{path}: no answer before the kill: {exc!r}")
            raise ServerGone from exc
        finally:
            with ledger.lock:
                ledger.in_flight -= 1
        if not response.is_success:
            with ledger.lock:
                ledger.unexpected.append(f"{path}: {response.status_code} {response.text[:300]}")
            return None
        with ledger.lock:
            ledger.acknowledged += 1
        result: dict[str, Any] = response.json()
        return result


def _new_patient(number: int) -> dict[str, str]:
    birth = date(1940, 1, 1) + timedelta(days=7 * number)
    sex = "female" if number % 2 else "male"
    return person(
        "Anna" if sex == "female" else "Piotr",
        f"Nowak-{'ABCDEFGHIJKLMNOPQRSTUVWXYZ'[number % 26]}",
        birth,
        number,
        sex,
    )


def _events(detail: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    return [(e["step"], e["from_state"], e["to_state"]) for e in detail["events"]]


def _journey(desk: Desk, number: int) -> None:
    """One patient's first steps: registration, the doctor reading the chart (a read-only
    request whose audit record is group-committed before the answer), an episode, then an
    assessment or a cancel.

    Custody events and PROM submissions belong here once those domains exist.
    """
    ledger = desk.ledger
    data = _new_patient(number)
    patient = desk.post(Role.COORDINATOR, "/api/v1/patients", data)
    if patient is None:
        return
    with ledger.lock:
        ledger.patients[patient["id"]] = data | {"mrn": patient["mrn"]}
    chart = desk.get(Role.DOCTOR, f"/api/v1/patients/{patient['id']}")
    if chart is None:
        return
    with ledger.lock:
        ledger.chart_reads[chart["id"]] += 1
    episode = desk.post(
        Role.COORDINATOR,
        f"/api/v1/patients/{patient['id']}/episodes",
        {"condition_code": "disc_protrusion", "region": "lumbar"},
    )
    if episode is None:
        return
    with ledger.lock:
        ledger.timelines[episode["id"]] = _events(episode)
    if number % 3 == 0:
        assessed = desk.post(
            Role.DOCTOR,
            f"/api/v1/episodes/{episode['id']}/assessment",
            {"consultation": good_consultation(), "red_flags": no_red_flags()},
        )
        if assessed is not None:
            with ledger.lock:
                ledger.assessments[episode["id"]] = (
                    assessed["consultation_version"],
                    assessed["episode_state"],
                )
    elif number % 3 == 1:
        cancelled = desk.post(
            Role.COORDINATOR,
            f"/api/v1/episodes/{episode['id']}/steps",
            {
                "step": Step.CANCEL.value,
                "target": EpisodeState.CANCELLED.value,
                "reason": "The patient moved to another city",
                "expected_state": EpisodeState.REFERRED.value,
            },
        )
        if cancelled is not None:
            with ledger.lock:
                ledger.timelines[episode["id"]] = _events(cancelled)


def _drive(base_url: str, tokens: dict[Role, str], ledger: Ledger, stop: threading.Event) -> None:
    desk = Desk(base_url, tokens, ledger)
    try:
        while not stop.is_set():
            _journey(desk, ledger.next_number())
    except ServerGone:
        pass
    finally:
        desk.client.close()


def _acknowledged_writes_missing(session: Session, ledger: Ledger) -> list[str]:
    problems = []
    fields = ("given_name", "family_name", "date_of_birth", "sex", "national_id", "mrn")
    for patient_id, sent in ledger.patients.items():
        row = session.get(Patient, patient_id)
        if row is None:
            problems.append(f"acknowledged patient {patient_id} is missing")
            continue
        stored = {f: str(getattr(row, f)) for f in fields}
        if stored != {f: sent[f] for f in fields}:
            problems.append(f"patient {patient_id} stored {stored}, acknowledged {sent}")
    stored_timelines = _timelines(session)
    for episode_id, acknowledged in ledger.timelines.items():
        stored = stored_timelines.get(episode_id, [])
        if stored[: len(acknowledged)] != acknowledged:
            problems.append(f"episode {episode_id}: stored {stored}, acknowledged {acknowledged}")
    reads = Counter(
        int(patient_id)
        for patient_id in session.scalars(
            select(AuditRecord.entity_id).where(
                AuditRecord.action == "patient.read", AuditRecord.actor_role == Role.DOCTOR.value
            )
        )
    )
    for patient_id, answered in ledger.chart_reads.items():
        if reads[patient_id] < answered:
            problems.append(
                f"patient {patient_id}: {answered} chart reads answered, "
                f"{reads[patient_id]} audit records"
            )
    for episode_id, (version, state) in ledger.assessments.items():
        consultation = session.scalar(
            select(Consultation.id).where(
                Consultation.episode_id == episode_id, Consultation.version == version
            )
        )
        if consultation is None:
            problems.append(f"acknowledged consultation v{version} of episode {episode_id} lost")
        if state not in [to for _, _, to in stored_timelines.get(episode_id, [])]:
            problems.append(f"episode {episode_id} never reached acknowledged state {state}")
    return problems


def _timelines(session: Session) -> dict[int, list[tuple[str, str | None, str]]]:
    timelines: dict[int, list[tuple[str, str | None, str]]] = {}
    for e in session.scalars(select(EpisodeEvent).order_by(EpisodeEvent.id)):
        timelines.setdefault(e.episode_id, []).append((e.step, e.from_state, e.to_state))
    return timelines


def _half_written(session: Session) -> list[str]:
    """Whatever the services write in one transaction must be all there or all absent."""
    problems = []
    successes = session.execute(
        select(AuditRecord.action, AuditRecord.entity_id).where(AuditRecord.outcome == "success")
    ).all()
    for model, action in AUDITED_ROWS:
        rows = Counter(str(i) for i in session.scalars(select(model.id)))
        records = Counter(entity for act, entity in successes if act == action)
        if rows != records:
            problems.append(f"{model.__tablename__} rows {rows} but {action} records {records}")

    timelines = _timelines(session)
    events = Counter((str(e), step) for e, steps in timelines.items() for step, _, _ in steps)
    step_records = Counter(
        (entity, act.removeprefix("episode."))
        for act, entity in successes
        if act in EPISODE_STEP_ACTIONS
    )
    if events != step_records:
        problems.append(f"episode events {events} but step audit records {step_records}")
    for episode in session.scalars(select(Episode)):
        steps = timelines.get(episode.id, [])
        if not steps or steps[0] != ("open", None, EpisodeState.REFERRED.value):
            problems.append(f"episode {episode.id} has no opening event: {steps}")
            continue
        links_hold = all(steps[i][1] == steps[i - 1][2] for i in range(1, len(steps)))
        if not links_hold or steps[-1][2] != episode.state or len(steps) != episode.version:
            problems.append(
                f"episode {episode.id} ({episode.state}, version {episode.version}) "
                f"does not match its events {steps}"
            )

    registered = session.scalar(select(NamedCounter.value).where(NamedCounter.name == "mrn"))
    count = _patient_count(session)
    if (registered or 0) != count:
        problems.append(f"the MRN counter says {registered} but {count} patients are stored")
    return problems


def _patient_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Patient)) or 0


def _create_tokens(factory: sessionmaker[Session]) -> dict[Role, str]:
    staff = make_staff(factory)
    tokens = {}
    with unit_of_work(factory) as s:
        for role, scopes in TOKEN_SCOPES.items():
            _, secret = auth.create_api_token(
                s, staff.actor(role), "crash-test", [p.value for p in scopes]
            )
            tokens[role] = secret
    return tokens


def _load_until_acknowledged(
    server: Server, tokens: dict[Role, str], ledger: Ledger
) -> tuple[list[threading.Thread], int]:
    """Starts the client threads; returns once enough writes are acknowledged and at least one
    request is in flight, with the number in flight at that moment."""
    stop = threading.Event()
    threads = [
        threading.Thread(target=_drive, args=(server.base_url, tokens, ledger, stop), daemon=True)
        for _ in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + LOAD_TIMEOUT
    while True:
        with ledger.lock:
            enough, in_flight = ledger.acknowledged >= ACKNOWLEDGED_BEFORE_KILL, ledger.in_flight
        if enough and in_flight:
            return threads, in_flight
        if time.monotonic() > deadline or not any(t.is_alive() for t in threads):
            stop.set()
            pytest.fail(
                f"load never reached {ACKNOWLEDGED_BEFORE_KILL} acknowledged writes "
                f"({ledger.acknowledged}; unexpected: {ledger.unexpected[:3]}):\n"
                f"{server.log_tail()}"
            )
        time.sleep(0.001 if enough else 0.01)


@contextmanager
def running(command: list[str], env: dict[str, str]) -> Iterator[Callable[[], tuple[int, str]]]:
    """A command run alongside the test; yields a function that waits for its exit code and
    output. The process is killed on the way out if it is still running."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )

    def result() -> tuple[int, str]:
        output, _ = process.communicate(timeout=READY_TIMEOUT)
        return process.returncode, output

    try:
        yield result
    finally:
        if process.returncode is None:
            process.kill()
            process.communicate()


def test_a_server_killed_under_load_keeps_every_acknowledged_write_and_an_intact_chain(
    crash_database: str, tmp_path: Path
):
    """ASVS V2.3.3 (a business operation succeeds entirely or is rolled back), V16.4.2 (the
    audit log cannot be modified: the chain still verifies after the crash), V16.5.3 (fails
    securely: no acknowledged write is lost, no half-written one is left)."""
    factory = session_factory(crash_database)
    tokens = _create_tokens(factory)
    ledger = Ledger()
    log = tmp_path / "server.log"

    with serving(crash_database, log) as server:
        ready = wait_until_ready(server)
        # ASVS V13.4.6: the server does not name itself (uvicorn would, on every answer).
        assert "server" not in ready.headers, ready.headers
        threads, in_flight_at_kill = _load_until_acknowledged(server, tokens, ledger)
        ledger.killed.set()
        server.kill()
    for t in threads:
        t.join(timeout=REQUEST_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a client is still waiting for the dead server"

    assert in_flight_at_kill >= 1 and ledger.unanswered >= 1, "the kill must cut off requests"
    assert ledger.unexpected == [], ledger.unexpected
    assert len(ledger.patients) >= 1 and len(ledger.timelines) >= 1
    assert sum(ledger.chart_reads.values()) >= 1

    # Restart straight away; check the database and run `audit verify` while it starts.
    with (
        running([*CLI, "audit", "verify"], _env(crash_database)) as verified,
        serving(crash_database, log) as server,
    ):
        with factory() as s:
            assert _acknowledged_writes_missing(s, ledger) == []
            assert _half_written(s) == []
            stored_patients = _patient_count(s)
        code, output = verified()
        assert code == 0, output
        assert "intact" in output

        wait_until_ready(server)
        coordinator = {"Authorization": f"Bearer {tokens[Role.COORDINATOR]}"}
        with httpx.Client(base_url=server.base_url, timeout=REQUEST_TIMEOUT) as client:
            last_id = max(ledger.patients)
            read = client.get(f"/api/v1/patients/{last_id}", headers=coordinator)
            assert read.status_code == 200, read.text
            assert read.json()["mrn"] == ledger.patients[last_id]["mrn"]
            after = _new_patient(next(ledger.numbers))
            created = client.post("/api/v1/patients", json=after, headers=coordinator)
            assert created.status_code == 201, created.text
            new_id = created.json()["id"]
            again = client.get(f"/api/v1/patients/{new_id}", headers=coordinator)
            assert again.status_code == 200, again.text
            assert again.json()["national_id"] == after["national_id"]

    with factory() as s:
        assert _patient_count(s) == stored_patients + 1
        assert _half_written(s) == []
        chain = audit.verify(s)
    assert chain.intact, chain.first_break
