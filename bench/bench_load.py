"""HTTP load on the API: patient chart reads and patient search against a bare endpoint.

Targets, on SQLite and PostgreSQL: chart read p99 <= 50 ms and chart-read throughput >= 50 % of
the same run's bare ceiling (`GET /livez`: no database, no sign-in).

Each backend gets a fresh database with the demo clinic (10,000 patients by default), an API
token of the demo doctor (scope patient:read), and `regenspine serve --workers 2` on 127.0.0.1
in its own process group. `wrk` (Debian package `wrk`) then drives each endpoint with 64
connections: a warm-up, then the measured run. Chart reads go to `GET /api/v1/patients/{id}`
over up to 5,000 shuffled patients; searches to `GET /api/v1/patients?q=` with, for 40
patients, the first four letters of the surname, the full name and the MRN. Every chart read
appends a hash-chained audit record in its own transaction, so the script also checks
afterwards that the audit log holds at least one `patient.read` record per answered chart read.

With --cpu it also reads, from /proc, the CPU time that each party spent during each measured
run, per answered request: the server's workers, the database server's processes (PostgreSQL)
and wrk itself. On this machine all of them share the same cores, so these figures say how
much of a request's cost the application could remove at all.

Exits non-zero on operational errors (wrk missing, server not ready, any non-2xx answer or
socket error); a missed target is printed, not an error.

    .venv/bin/python bench/bench_load.py [--backend sqlite|postgresql|both] [--patients 10000]
        [--duration 10] [--warmup 3] [--connections 64] [--threads 2] [--workers 2] [--cpu]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from _common import HOST, free_port, fresh_database, regenspine_command
from sqlalchemy import func, select

from regenspine.audit.models import AuditRecord
from regenspine.auth import service as auth
from regenspine.auth.models import User
from regenspine.auth.permissions import Permission
from regenspine.cli import upgrade_database
from regenspine.db import dispose_engines, session_factory, unit_of_work
from regenspine.demo import load_demo
from regenspine.patients.models import Patient

P99_TARGET_MS = 50.0
RATIO_TARGET = 0.5
MAX_PATHS = 5000


class BenchError(RuntimeError):
    """Something operational went wrong: the figures would mean nothing."""


@dataclass(frozen=True)
class Clinic:
    token: str
    chart_paths: list[str]
    search_paths: list[str]


def seed(url: str, patients: int) -> Clinic:
    """The demo clinic, a read-only API token of the demo doctor, and the URLs to request."""
    upgrade_database(url)
    factory = session_factory(url)
    with unit_of_work(factory) as s:
        load_demo(s, patients)
        doctor = s.scalars(select(User).where(User.username == "doctor")).one()
        _, secret = auth.create_api_token(
            s, auth.actor_for(doctor, HOST), "load test", [Permission.PATIENT_READ.value]
        )
        ids = list(s.scalars(select(Patient.id)))
        rng = random.Random(20261124)
        sample = [s.get(Patient, pid) for pid in rng.sample(ids, min(40, len(ids)))]
    rng.shuffle(ids)
    queries: list[str] = []
    for p in sample:
        assert p is not None
        queries += [p.family_name[:4], f"{p.given_name} {p.family_name}", p.mrn]
    return Clinic(
        token=secret,
        # wrk's Lua keeps the list as one table literal: a sample keeps it small.
        chart_paths=[f"/api/v1/patients/{pid}" for pid in ids[:MAX_PATHS]],
        search_paths=[f"/api/v1/patients?q={urllib.parse.quote(q)}" for q in queries],
    )


LUA = """
local paths = {%s}
local counter = 0
function setup(thread)
  thread:set("offset", counter * 7919)
  counter = counter + 1
end
function init(args)
  i = offset or 0
end
function request()
  i = i + 1
  return wrk.format(nil, paths[(i %% #paths) + 1])
end
"""


def lua_script(paths: list[str], where: Path) -> Path:
    where.write_text(LUA % ", ".join(f'"{p}"' for p in paths))
    return where


def get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)  # noqa: S310 (http on 127.0.0.1 only)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


class Server:
    """`regenspine serve` in its own process group, stopped with the whole group."""

    def __init__(self, url: str, workers: int, log: Path, *, floor: bool = False) -> None:
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.log_path = log
        env = os.environ | {"REGENSPINE_DATABASE_URL": url}
        command = [*regenspine_command(), "serve"]
        if floor:  # the same server with bench_read_floor.py's route mounted beside the app's
            env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), *sys.path])
            command = [sys.executable, "-m", "uvicorn", "bench_read_floor:floor_serve_app"]
            command += ["--factory", "--proxy-headers", "--no-server-header"]
            command += ["--forwarded-allow-ips", "127.0.0.1"]  # serve's default
        self.log = log.open("wb")
        self.proc = subprocess.Popen(  # noqa: S603 (our own executable and arguments)
            [*command, "--host", HOST, "--port", str(self.port), "--workers", str(workers)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the server exited ({self.proc.returncode}): {self.tail()}")
            try:
                if get(self.base + "/healthz") == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise BenchError(f"the server was not ready after {timeout:.0f} s: {self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _process_ticks(pid: str) -> tuple[str, int, int] | None:
    """(command name, process group, user + system clock ticks) of a running process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:  # it ended between the listing and the read
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    # After the name: state(0) ppid(1) pgrp(2) ... utime(11) stime(12).
    return name, int(fields[2]), int(fields[11]) + int(fields[12])


@dataclass(frozen=True)
class CpuSnapshot:
    """Clock ticks so far of the server's process group, of the database server's processes
    and of this script's waited-for children (wrk), and of the whole machine (busy and all)."""

    server: int
    database: int
    children_s: float
    machine_busy: int
    machine_all: int


def cpu_snapshot(server_group: int) -> CpuSnapshot:
    server = database = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        seen = _process_ticks(pid)
        if seen is None:
            continue
        name, group, ticks = seen
        if group == server_group:
            server += ticks
        elif name == "postgres":
            database += ticks
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return CpuSnapshot(
        server, database, children.ru_utime + children.ru_stime, sum(values) - idle, sum(values)
    )


@dataclass(frozen=True)
class CpuShare:
    """CPU microseconds per answered request, by party, during one measured run."""

    server_us: float
    database_us: float
    wrk_us: float
    machine_busy: float  # the share of the machine's CPU time that was busy

    @staticmethod
    def between(before: CpuSnapshot, after: CpuSnapshot, requests: int) -> CpuShare:
        per = 1e6 / max(requests, 1)
        all_ticks = max(after.machine_all - before.machine_all, 1)
        return CpuShare(
            (after.server - before.server) / TICKS_PER_SECOND * per,
            (after.database - before.database) / TICKS_PER_SECOND * per,
            (after.children_s - before.children_s) * per,
            (after.machine_busy - before.machine_busy) / all_ticks,
        )


@dataclass(frozen=True)
class WrkResult:
    p50_ms: float
    p99_ms: float
    rps: float
    requests: int
    non_2xx: int
    socket_errors: int
    cpu: CpuShare | None = None


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * UNITS[unit]


def parse_wrk(output: str) -> WrkResult:
    try:
        p50 = _ms(re.search(r"^\s*50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
        p99 = _ms(re.search(r"^\s*99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
        requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    except AttributeError:
        raise BenchError(f"could not read wrk's output:\n{output}") from None
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        p50,
        p99,
        rps,
        requests,
        int(non_2xx.group(1)) if non_2xx else 0,
        sum(int(n) for n in sockets.groups()) if sockets else 0,
    )


def wrk(
    base: str,
    script: Path,
    token: str | None,
    seconds: int,
    args: argparse.Namespace,
    server_group: int | None = None,
) -> WrkResult:
    # A long timeout keeps slow answers in the latency distribution instead of dropping them.
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s", "--latency"]
    command += ["--timeout", "30s"]
    command += ["-s", str(script)]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    before = cpu_snapshot(server_group) if server_group is not None else None
    done = subprocess.run(  # noqa: S603 (wrk with our own arguments)
        [*command, base + "/"], capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    after = cpu_snapshot(server_group) if server_group is not None else None
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    result = parse_wrk(done.stdout)
    if result.non_2xx or result.socket_errors:
        raise BenchError(
            f"{result.non_2xx} non-2xx answers and {result.socket_errors} socket errors:\n"
            + done.stdout
        )
    if before is not None and after is not None:
        result = replace(result, cpu=CpuShare.between(before, after, result.requests))
    return result


@dataclass(frozen=True)
class Endpoint:
    name: str
    paths: list[str]
    authenticated: bool


def run(backend: str, args: argparse.Namespace) -> tuple[dict[str, WrkResult], int]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        url, drop = fresh_database(backend, tmp)
        server = None
        try:
            clinic = seed(url, args.patients)
            dispose_engines()  # the server's workers open their own connections
            endpoints = [
                Endpoint("bare /livez", ["/livez"], False),
                Endpoint("chart read", clinic.chart_paths, True),
                Endpoint("search", clinic.search_paths, True),
            ]
            if args.floor:
                floor_paths = [p.replace("/api/v1/", "/floor/") for p in clinic.chart_paths]
                endpoints.append(Endpoint("floor read", floor_paths, True))
            server = Server(url, args.workers, tmp / "server.log", floor=args.floor)
            server.wait_ready()
            results: dict[str, WrkResult] = {}
            chart_requests = 0
            for n, endpoint in enumerate(endpoints):
                token = clinic.token if endpoint.authenticated else None
                print(f"  {backend}: {endpoint.name} ...", file=sys.stderr, flush=True)
                try:
                    status = get(server.base + endpoint.paths[0], token)
                except OSError as exc:
                    raise BenchError(f"{endpoint.name}: {endpoint.paths[0]}: {exc}") from None
                if status != 200:
                    raise BenchError(f"{endpoint.name}: {endpoint.paths[0]} answered {status}")
                script = lua_script(endpoint.paths, tmp / f"paths{n}.lua")
                warm = wrk(server.base, script, token, args.warmup, args)
                group = server.proc.pid if args.cpu else None  # the group's leader
                results[endpoint.name] = wrk(server.base, script, token, args.duration, args, group)
                if endpoint.name in ("chart read", "floor read"):
                    chart_requests += 1 + warm.requests + results[endpoint.name].requests
            server.stop()
            server = None
            factory = session_factory(url)
            with factory() as s:
                audited = s.scalar(
                    select(func.count(AuditRecord.id)).where(AuditRecord.action == "patient.read")
                )
            if (audited or 0) < chart_requests:
                raise BenchError(
                    f"{chart_requests} chart reads answered but only {audited} audit records"
                )
            return results, audited or 0
        finally:
            if server is not None:
                server.stop()
            dispose_engines()
            drop()  # type: ignore[operator]


def print_cpu(backend: str, results: dict[str, WrkResult]) -> None:
    """Where each party's CPU went per request, and the budget the ratio target leaves: with
    the machine saturated in both runs, a chart read may cost at most 1 / RATIO_TARGET times
    what a bare request costs, all parties together."""
    print(
        f"{'backend':<11} {'endpoint':<12} {'workers us':>11} {'database us':>12} "
        f"{'wrk us':>7} {'all us':>7} {'x bare':>7} {'machine busy':>13}"
    )
    bare = results["bare /livez"].cpu
    assert bare is not None
    bare_all = bare.server_us + bare.database_us + bare.wrk_us
    for name, r in results.items():
        c = r.cpu
        assert c is not None
        total = c.server_us + c.database_us + c.wrk_us
        print(
            f"{backend:<11} {name:<12} {c.server_us:>11.0f} {c.database_us:>12.0f} "
            f"{c.wrk_us:>7.0f} {total:>7.0f} {total / bare_all:>7.2f} {c.machine_busy:>12.0%}"
        )
    chart = results["chart read"].cpu
    assert chart is not None
    budget = bare_all / RATIO_TARGET
    left = budget - chart.database_us - chart.wrk_us
    print(
        f"{backend:<11} at ratio {RATIO_TARGET:.2f} a chart read may cost {budget:.0f} us in all; "
        f"after the database server's and wrk's share, {left:.0f} us are left for the worker, "
        f"against {bare.server_us:.0f} us for a bare request and {chart.server_us:.0f} us now"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per endpoint")
    parser.add_argument("--warmup", type=int, default=3, help="seconds before each run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also load bench_read_floor.py's leanest audited chart read, in the same server",
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="also print the CPU time per request of the workers, the database server and wrk",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    print(
        f"{args.connections} connections, {args.threads} wrk threads, {args.workers} workers, "
        f"{args.duration} s per endpoint after {args.warmup} s warm-up, "
        f"{args.patients} patients"
    )
    print(
        f"{'backend':<11} {'endpoint':<12} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>9} "
        f"{'ratio':>6}  target"
    )
    try:
        for backend in backends:
            results, audited = run(backend, args)
            bare = results["bare /livez"].rps
            for name, r in results.items():
                ratio = r.rps / bare
                if name == "chart read":
                    met = r.p99_ms <= P99_TARGET_MS and ratio >= RATIO_TARGET
                    verdict = (
                        f"{'met' if met else 'MISSED'} (p99 <= {P99_TARGET_MS:.0f} ms, "
                        f"ratio >= {RATIO_TARGET:.2f})"
                    )
                elif name == "bare /livez":
                    verdict = "ceiling"
                else:
                    verdict = "-"
                print(
                    f"{backend:<11} {name:<12} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
                    f"{r.rps:>9.1f} {ratio:>6.2f}  {verdict}"
                )
            print(f"{backend:<11} audit log holds {audited} patient.read records")
            if args.cpu:
                print_cpu(backend, results)
    except BenchError as exc:
        sys.exit(f"bench failed: {exc}")


if __name__ == "__main__":
    main()
