"""How cheap could an audited chart read be? The same work without the ORM or FastAPI's
dependency injection, measured beside the real route and the bare endpoint.

The load target (chart read at half the throughput of a bare endpoint) needs a chart read that
costs about two bare requests of CPU. This script answers whether any implementation of the
chart read's work in this stack could: in the benchmark process only (never in the clinic's
app), it mounts `GET /floor/patients/{id}`, a plain Starlette route that takes a connection
from the same read-only pool, finds the bearer token and its owner with one SQL statement on
the driver's own cursor, checks that the token is not revoked or expired and that its owner is
active, checks the permission, reads the patient with a second statement, validates the row
into the same response model, and hands the same `patient.read` audit record to the same group
appender, answering after its commit. It leaves out what the real route does besides:
FastAPI's routing and dependency resolution, the ORM session, the care-team check (a doctor
needs none), the token's last-use time, and the security log.

Like bench_request_cost.py it calls the ASGI app directly, 32 requests at a time, and divides
the process's CPU by the requests answered (the database server's own CPU is not counted).

    .venv/bin/python bench/bench_read_floor.py [--backend sqlite|postgresql|both]
        [--patients 2000] [--requests 4000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import fresh_database
from bench_load import seed
from bench_request_cost import measure
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from regenspine.app import create_app, serve_app
from regenspine.audit.appender import group_appender
from regenspine.audit.service import pending_append
from regenspine.auth.actor import Actor
from regenspine.auth.permissions import Permission, Role
from regenspine.auth.service import sha256_hex
from regenspine.config import get_settings
from regenspine.db import DeferredWork, _read_only_bind, utcnow
from regenspine.patients.schemas import PatientPublic
from regenspine.web.collector import settle_for_serving

COLUMNS = list(PatientPublic.model_fields)


def _when(value: Any) -> datetime | None:
    """SQLite's driver answers text where the ORM's column type would give a datetime."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value


def mount_floor(app: FastAPI) -> None:
    factory = app.state.session_factory
    readers = _read_only_bind(factory.kw["bind"])
    # Only the driver's placeholder and the response model's field names are interpolated.
    mark = "%s" if readers.dialect.name == "postgresql" else "?"
    token_sql = (  # noqa: S608
        "SELECT t.scopes, t.expires_at, t.revoked_at, u.id, u.username, u.role, u.full_name, "
        "u.is_active FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = "
    ) + mark
    patient_sql = f"SELECT {', '.join(COLUMNS)} FROM patients WHERE id = {mark}"  # noqa: S608

    async def floor(request: Request) -> Response:
        secret = request.headers.get("authorization", "")[7:]
        patient_id = int(request.path_params["patient_id"])
        connection = readers.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(token_sql, (sha256_hex(secret),))
            token = cursor.fetchone()
            expires = _when(token[1]) if token else None
            if token is None or token[2] is not None or not token[7]:
                return Response(status_code=401)
            if expires is not None and expires <= utcnow():
                return Response(status_code=401)
            actor = Actor(
                user_id=token[3],
                username=token[4],
                role=Role(token[5]),
                source_ip=request.client.host if request.client else "",
                scopes=frozenset(
                    Permission(s) for s in token[0].split() if s in Permission._value2member_map_
                ),
                via_token=True,
                full_name=token[6],
            )
            actor.require(Permission.PATIENT_READ)
            cursor.execute(patient_sql, (patient_id,))
            row = cursor.fetchone()
            cursor.close()
        finally:
            connection.close()
        if row is None:
            return Response(status_code=404)
        body = PatientPublic.model_validate(dict(zip(COLUMNS, row, strict=True)))
        work = DeferredWork()
        work.appends.append(
            pending_append(
                actor,
                "patient.read",
                entity_type="patient",
                entity_id=patient_id,
                patient_id=patient_id,
            )
        )
        await group_appender(factory).commit(work)
        return Response(body.model_dump_json(), media_type="application/json")

    app.router.add_route("/floor/patients/{patient_id}", floor, methods=["GET"])


def floor_serve_app() -> FastAPI:
    """`regenspine serve`'s application with the floor route mounted: for bench_load.py --floor."""
    app = serve_app()
    mount_floor(app)
    return app


async def run(backend: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url, drop = fresh_database(backend, Path(tmp))
        try:
            clinic = seed(url, args.patients)
            app = create_app(get_settings().model_copy(update={"database_url": url}))
            mount_floor(app)
            settle_for_serving()
            floor_paths = [
                p.replace("/api/v1/patients/", "/floor/patients/") for p in clinic.chart_paths
            ]
            endpoints = [
                ("bare /livez", ["/livez"], None),
                ("chart read", clinic.chart_paths, clinic.token),
                ("floor read", floor_paths, clinic.token),
            ]
            for _, targets, token in endpoints:  # warm-up
                await measure(app, targets, token, 640, 32)
            for round_ in range(1, args.rounds + 1):
                baseline = 0.0
                for name, targets, token in endpoints:
                    cpu, _loop, _other, rate = await measure(app, targets, token, args.requests, 32)
                    baseline = baseline or cpu
                    print(
                        f"{backend:<11} {round_:>5} {name:<12} {cpu:>8.0f} {rate:>8.0f} "
                        f"{cpu / baseline:>7.2f}"
                    )
        finally:
            drop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--patients", type=int, default=2_000)
    parser.add_argument("--requests", type=int, default=4_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print("32 requests at a time, one process, CPU of this process per request")
    print(f"{'backend':<11} {'round':>5} {'endpoint':<12} {'cpu µs':>8} {'req/s':>8} {'x bare':>7}")
    for backend in ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]:
        asyncio.run(run(backend, args))


if __name__ == "__main__":
    main()
