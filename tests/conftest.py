"""Shared fixtures: a migrated database on SQLite and PostgreSQL, staff of every role, clients."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

# Cheap password hashing for tests only; production refuses these values.
os.environ.setdefault("REGENSPINE_ARGON2_TIME_COST", "1")
os.environ.setdefault("REGENSPINE_ARGON2_MEMORY_COST", "1024")
os.environ.setdefault("REGENSPINE_ARGON2_PARALLELISM", "1")
os.environ.setdefault("REGENSPINE_ENV", "development")

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from regenspine.auth import service as auth
from regenspine.auth.actor import SYSTEM_ACTOR, Actor
from regenspine.auth.models import User
from regenspine.auth.permissions import Role
from regenspine.config import get_settings
from regenspine.db import Base, dispose_engines, session_factory, unit_of_work
from regenspine.patients.pesel import make_pesel

REQUIRE_ALL = os.environ.get("REGENSPINE_REQUIRE_ALL") == "1"
PG_ADMIN_URL = os.environ.get(
    "REGENSPINE_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
PASSWORD = "correct-horse-battery-staple-42"


def skip_or_fail(reason: str) -> None:
    if REQUIRE_ALL:
        pytest.fail(f"REGENSPINE_REQUIRE_ALL=1 and: {reason}")
    pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under REGENSPINE_REQUIRE_ALL=1: {report.longrepr}"


def _create_pg_database() -> str | None:
    name = f"regenspine_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except Exception:
        return None
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@contextmanager
def new_database(kind: str, sqlite_file: Path) -> Iterator[str]:
    """The URL of a new, empty database: `sqlite_file` on SQLite, or a PostgreSQL database of
    its own, dropped afterwards (skipped, or failed under REGENSPINE_REQUIRE_ALL=1, when the
    server is not reachable)."""
    if kind == "sqlite":
        yield f"sqlite:///{sqlite_file}"
        dispose_engines()
        return
    url = _create_pg_database()
    if url is None:
        skip_or_fail("PostgreSQL on 127.0.0.1:5432 is not reachable")
        return
    try:
        yield url
    finally:
        dispose_engines()
        _drop_pg_database(url)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    from regenspine.cli import upgrade_database

    with new_database(request.param, tmp_path_factory.mktemp("db") / "regenspine.db") as url:
        upgrade_database(url)
        yield url


@pytest.fixture
def empty_database_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A new, empty database of the same kind as `database_url` (restores, migrations)."""
    kind = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    with new_database(kind, tmp_path / "empty.db") as url:
        yield url


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wipe(factory: sessionmaker[Session]) -> None:
    with factory() as session:
        if session.get_bind().dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            session.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(Base.metadata.sorted_tables):
                session.execute(table.delete())
        session.commit()


@pytest.fixture
def factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    made = session_factory(database_url)
    _wipe(made)
    yield made
    _wipe(made)


@pytest.fixture
def db(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is committed when the test body ends, like a request boundary."""
    with unit_of_work(factory) as session:
        yield session


@dataclass
class Staff:
    users: dict[Role, User]

    def actor(self, role: Role, ip: str = "127.0.0.1") -> Actor:
        return auth.actor_for(self.users[role], ip)

    def username(self, role: Role) -> str:
        return self.users[role].username

    def actor_by(self, role: str) -> Actor:
        return self.actor(Role(role))


def make_staff(factory: sessionmaker[Session]) -> Staff:
    users: dict[Role, User] = {}
    with unit_of_work(factory) as session:
        for role in Role:
            users[role] = auth.create_user(
                session,
                SYSTEM_ACTOR,
                auth.UserCreate(
                    f"{role.value.replace('_', '-')}",
                    f"Test {role.value.title()}",
                    role.value,
                    PASSWORD,
                ),
            )
    return Staff(users)


@pytest.fixture
def staff(factory: sessionmaker[Session]) -> Staff:
    return make_staff(factory)


@pytest.fixture
def app(database_url: str, factory: sessionmaker[Session]):  # type: ignore[no-untyped-def]
    from regenspine.app import create_app

    settings = get_settings().model_copy(update={"database_url": database_url})
    return create_app(settings)


def audit_count(factory, action: str) -> int:  # type: ignore[no-untyped-def]
    """How many records of this action the audit log holds."""
    from sqlalchemy import func, select

    from regenspine.audit.models import AuditRecord

    with factory() as s:
        return (
            s.scalar(
                select(func.count()).select_from(AuditRecord).where(AuditRecord.action == action)
            )
            or 0
        )


def open_lumbar_episode(clients) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """A coordinator registers a patient and opens a lumbar disc-protrusion episode: (patient
    id, episode id)."""
    from regenspine.auth.permissions import Role

    coordinator = clients(Role.COORDINATOR)
    pid = coordinator.post("/api/v1/patients", json=valid_patient()).json()["id"]
    r = coordinator.post(
        f"/api/v1/patients/{pid}/episodes",
        json={"condition_code": "disc_protrusion", "region": "lumbar"},
    )
    assert r.status_code == 201, r.text
    return pid, r.json()["id"]


def valid_patient(**overrides: str) -> dict[str, str]:
    data = {
        "given_name": "Jan",
        "family_name": "Kowalski",
        "date_of_birth": "1944-05-14",
        "sex": "male",
        "id_type": "pesel",
        "national_id": "44051401458",
        "phone": "+48 600 100 200",
        "preferred_language": "pl",
        "city": "Kraków",
        "country": "PL",
    }
    data.update(overrides)
    return data


def person(
    given_name: str, family_name: str, born: date, serial: int, sex: str = "male", **overrides: str
) -> dict[str, str]:
    """A valid registration of someone born on `born`, with a PESEL that matches the date and
    sex (`serial` tells people born on one day apart)."""
    return valid_patient(
        given_name=given_name,
        family_name=family_name,
        date_of_birth=born.isoformat(),
        sex=sex,
        national_id=make_pesel(born, serial, sex),
        **overrides,
    )


ARTIFACTS = Path(__file__).parent / "web" / "artifacts"


def browser_client(app):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    return TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False)


def sign_in(app, username: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    """A client signed in through the real login form, sending its CSRF token on writes."""
    return sign_in_client(browser_client(app), username, password)


def sign_in_client(client, username: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    """Signs `client` in through the real login form (see sign_in)."""
    client.get("/login")
    response = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": client.cookies["rs_csrf"]},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    me = client.get("/api/v1/me")
    assert me.status_code == 200, me.text
    client.headers["X-CSRF-Token"] = me.json()["csrf_token"]
    return client


@pytest.fixture
def clients(app, staff):  # type: ignore[no-untyped-def]
    """Signed-in clients by role, created on first use."""
    cache: dict[Role, object] = {}

    def get(role: Role):  # type: ignore[no-untyped-def]
        if role not in cache:
            cache[role] = sign_in(app, staff.username(role))
        return cache[role]

    return get


@contextmanager
def serve_in_thread(app, timeout: float = 60.0, **config):  # type: ignore[no-untyped-def]
    """The app behind a real uvicorn on a free loopback port, in a thread of this process;
    yields its base URL once the server accepts connections and stops it afterwards.
    ``config`` goes to ``uvicorn.Config`` (log level, access log...)."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    settings = {"log_level": "warning", "lifespan": "off", "timeout_graceful_shutdown": 5}
    server = uvicorn.Server(uvicorn.Config(app, **(settings | config)))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="regenspine-test-server"
    )
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            assert thread.is_alive(), "the server thread stopped before it started serving"
            assert time.monotonic() < deadline, "the server did not start in time"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
