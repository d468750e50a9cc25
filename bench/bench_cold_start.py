"""Cold start of `regenspine serve`: target < 2 s from process start to the first 200 on /healthz.

Each repetition starts `regenspine serve` on 127.0.0.1 against a migrated SQLite database and
polls /livez (the process answers) and then /healthz (the database answers too) every few
milliseconds; the clock starts just before the process is spawned. The same run measures two
baselines, each a whole process from spawn to exit: a bare `python -c pass`, and
`python -c "import regenspine.app"` (the interpreter plus the application's imports), so the
ratio shows what serving adds on this machine today.

Python caches compiled bytecode on first import; a deployment starts with that cache warm
after its first start, so the children run with caching on (whatever PYTHONDONTWRITEBYTECODE
says here) and one uncounted start first fills the cache; its time is printed apart.

    .venv/bin/python bench/bench_cold_start.py [--repetitions 7] [--workers 1]
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import HOST, free_port, regenspine_command

from regenspine.cli import upgrade_database

TARGET_S = 2.0
GIVE_UP_S = 60.0
IMPORT_LABEL = 'python -c "import regenspine.app"'


CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


class BenchError(RuntimeError):
    """Something operational went wrong: the figures would mean nothing."""


def status(port: int, path: str) -> int | None:
    connection = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None  # not listening yet
    finally:
        connection.close()


def wait_for(proc: subprocess.Popen[bytes], port: int, path: str, started: float) -> float:
    while time.perf_counter() - started < GIVE_UP_S:
        if status(port, path) == 200:
            return time.perf_counter() - started
        if proc.poll() is not None:
            raise BenchError(f"the server exited with {proc.returncode} before {path} answered")
        time.sleep(0.005)
    raise BenchError(f"{path} did not answer 200 within {GIVE_UP_S:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def serve_once(url: str, workers: int, log: Path) -> tuple[float, float]:
    """Seconds from spawn to the first 200 on /livez and on /healthz."""
    port = free_port()
    env = CHILD_ENV | {"REGENSPINE_DATABASE_URL": url}
    command = [*regenspine_command(), "serve", "--host", HOST, "--port", str(port)]
    with log.open("ab") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(  # noqa: S603 (our own executable and arguments)
            [*command, "--workers", str(workers)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            live = wait_for(proc, port, "/livez", started)
            ready = wait_for(proc, port, "/healthz", started)
        except BenchError as exc:
            raise BenchError(f"{exc}\n{log.read_text(errors='replace')[-2000:]}") from None
        finally:
            stop(proc)
    return live, ready


def process_seconds(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=CHILD_ENV)  # noqa: S603
    return time.perf_counter() - started


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):>8.3f} {max(values):>8.3f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repetitions", type=int, default=7)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    live: list[float] = []
    ready: list[float] = []
    first = 0.0
    bare: list[float] = []
    imports: list[float] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        url = f"sqlite:///{tmp / 'regenspine.db'}"
        upgrade_database(url)
        try:
            first = serve_once(url, args.workers, tmp / "server.log")[1]
            # Interleaved, so a burst of load on the machine hits all of them alike.
            for _ in range(args.repetitions):
                bare.append(process_seconds("pass"))
                imports.append(process_seconds("import regenspine.app"))
                first_live, first_ready = serve_once(url, args.workers, tmp / "server.log")
                live.append(first_live)
                ready.append(first_ready)
        except BenchError as exc:
            sys.exit(f"bench failed: {exc}")
    print(f"{args.repetitions} repetitions, `regenspine serve --workers {args.workers}`, SQLite")
    print(f"{'measured':<34} {'median s':>8} {'max s':>8}")
    print(f"{'python -c pass':<34} {summary(bare)}")
    print(f"{IMPORT_LABEL:<34} {summary(imports)}")
    print(f"{'serve: first 200 on /livez':<34} {summary(live)}")
    print(f"{'serve: first 200 on /healthz':<34} {summary(ready)}")
    print(f"{'first start (uncounted)':<34} {first:>8.3f}")
    median_ready = statistics.median(ready)
    print(f"ratio ready / import: {median_ready / statistics.median(imports):.2f}")
    print(f"ratio ready / bare interpreter: {median_ready / statistics.median(bare):.2f}")
    met = max(ready) < TARGET_S
    print(
        f"target ready < {TARGET_S:.0f} s on every repetition: "
        f"{'met' if met else 'MISSED'} (median {median_ready:.3f} s, max {max(ready):.3f} s)"
    )


if __name__ == "__main__":
    main()
