"""Many API clients at once against one server process, on SQLite and PostgreSQL.

Every chart read appends to the audit chain in its own transaction, and that transaction holds
a lock until it commits: SQLite's database write lock, PostgreSQL's audit-chain lock. More
concurrent requests than the server has worker threads once stalled every request until a
timeout (SQLite: "database is locked" after 15 s; PostgreSQL: the connection pool's 30 s),
because the requests waiting for the lock took every worker thread and the request holding it
found none left to commit in. The server here is real (uvicorn, one process, the default
worker-thread pool) and the clients are more than its threads.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select

from regenspine.audit import service as audit
from regenspine.audit.models import AuditRecord
from regenspine.auth import service as auth
from regenspine.auth.permissions import Permission, Role
from regenspine.db import unit_of_work
from regenspine.patients import service as patients
from tests.conftest import serve_in_thread, valid_patient

# anyio's default pool has 40 worker threads; the clients must outnumber them.
CLIENTS = 64
READS_PER_CLIENT = 2
# Only a guard against hanging the suite if the stall comes back; a stalled request would wait
# for the 15 s or 30 s database timeouts and fail the run long before this.
CLIENT_TIMEOUT = 120.0


@pytest.fixture
def served(app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with serve_in_thread(app) as base_url:
        yield base_url


def test_more_concurrent_chart_reads_than_worker_threads_are_all_served_and_audited(
    served, factory, staff
):
    """V15.4.3, V15.4.4: with more concurrent clients than worker threads, every chart read is
    answered 200 (none stalls into a database timeout), and each one left exactly one
    patient.read record in an audit chain that still verifies."""
    doctor = staff.actor(Role.DOCTOR)
    with unit_of_work(factory) as s:
        patient_id = patients.register_patient(s, staff.actor(Role.COORDINATOR), valid_patient()).id
        _, secret = auth.create_api_token(s, doctor, "concurrency", [Permission.PATIENT_READ.value])
    url = f"{served}/api/v1/patients/{patient_id}"
    start = threading.Barrier(CLIENTS)

    def client(_: int) -> list[int]:
        with httpx.Client(
            headers={"Authorization": f"Bearer {secret}"}, timeout=CLIENT_TIMEOUT
        ) as http:
            start.wait(timeout=CLIENT_TIMEOUT)
            return [http.get(url).status_code for _ in range(READS_PER_CLIENT)]

    with ThreadPoolExecutor(CLIENTS) as pool:
        statuses = Counter(code for codes in pool.map(client, range(CLIENTS)) for code in codes)

    assert statuses == Counter({200: CLIENTS * READS_PER_CLIENT})
    with factory() as s:
        reads = s.scalar(
            select(func.count(AuditRecord.id)).where(
                AuditRecord.action == "patient.read", AuditRecord.patient_id == patient_id
            )
        )
        assert reads == CLIENTS * READS_PER_CLIENT
        assert audit.verify(s).intact
