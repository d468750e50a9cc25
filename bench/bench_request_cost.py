"""CPU per request inside one process, without HTTP: where the time of an audited read goes.

The load benchmark (bench_load.py) measures what a client sees; this one explains it. The ASGI
application is called directly (no sockets, no uvicorn), 32 requests at a time on one event
loop, and the CPU time of the process is divided by the number of requests answered. It is
split into the event-loop thread and all other threads (worker threads and the audit
appender), read from /proc. Chart reads and searches are those of bench_load.py. The
baseline of the same run is `GET /livez` (no database, no sign-in): the ratio says how many
bare requests one chart read costs.

    .venv/bin/python bench/bench_request_cost.py [--backend sqlite|postgresql|both]
        [--patients 2000] [--requests 6000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from _common import HOST, fresh_database
from bench_load import seed

from regenspine.app import create_app
from regenspine.config import get_settings
from regenspine.web.collector import settle_for_serving

App = Callable[..., Awaitable[None]]


async def call(app: App, target: str, token: str | None) -> None:
    path, _, query = target.partition("?")
    headers = [(b"host", HOST.encode())]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": (HOST, 50000),
        "server": (HOST, 8000),
    }
    status = 0

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])  # type: ignore[call-overload]

    await app(scope, receive, send)
    if status != 200:
        raise RuntimeError(f"{target} answered {status}")


def thread_cpu() -> tuple[float, float]:
    """CPU seconds of the event-loop (main) thread and of every other thread."""
    ticks = os.sysconf("SC_CLK_TCK")
    main, other = 0, 0
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        used = int(fields[11]) + int(fields[12])  # utime + stime
        if tid == str(os.getpid()):
            main += used
        else:
            other += used
    return main / ticks, other / ticks


async def measure(
    app: App, targets: list[str], token: str | None, requests: int, concurrency: int
) -> tuple[float, float, float, float]:
    """(µs CPU per request, of it on the event loop, in other threads, requests/s)."""
    rng = random.Random(20261124)

    async def client() -> None:
        for _ in range(requests // concurrency):
            await call(app, rng.choice(targets), token)

    main0, other0 = thread_cpu()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    main1, other1 = thread_cpu()
    done = requests // concurrency * concurrency
    return (
        cpu / done * 1e6,
        (main1 - main0) / done * 1e6,
        (other1 - other0) / done * 1e6,
        done / wall,
    )


async def run(backend: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url, drop = fresh_database(backend, Path(tmp))
        try:
            clinic = seed(url, args.patients)
            token = clinic.token
            app = create_app(get_settings().model_copy(update={"database_url": url}))
            settle_for_serving()  # as each `regenspine serve` worker does
            endpoints = [
                ("bare /livez", ["/livez"], None),
                ("chart read", clinic.chart_paths, token),
                ("search", clinic.search_paths, token),
            ]
            for _, targets, with_token in endpoints:  # warm-up: pools, caches, code paths
                await measure(app, targets, with_token, 320, args.concurrency)
            baseline = 0.0
            for name, targets, with_token in endpoints:
                cpu, loop, other, rate = await measure(
                    app, targets, with_token, args.requests, args.concurrency
                )
                baseline = baseline or cpu
                print(
                    f"{backend:<11} {name:<12} {cpu:>9.0f} {loop:>9.0f} {other:>9.0f} "
                    f"{rate:>9.0f} {cpu / baseline:>8.2f}"
                )
        finally:
            drop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--patients", type=int, default=2_000)
    parser.add_argument("--requests", type=int, default=6_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    print(f"{args.concurrency} requests at a time, {args.requests} per endpoint, one process")
    print(
        f"{'backend':<11} {'endpoint':<12} {'cpu µs':>9} {'loop µs':>9} {'other µs':>9} "
        f"{'req/s':>9} {'x bare':>8}"
    )
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        asyncio.run(run(backend, args))


if __name__ == "__main__":
    main()
