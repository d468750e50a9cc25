"""Seeding the demo clinic with 10,000 patients: target < 30 s on SQLite and PostgreSQL.

Prints the time of `load_demo` and, measured in the same run as the baseline, the time of a
bare bulk insert of the same patient rows (no staff, no audit chain, no care team), so the ratio
shows what the clinic's bookkeeping costs on this machine today.

    .venv/bin/python bench/bench_demo_seed.py [--patients 10000] [--backend sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from _common import fresh_database
from sqlalchemy import insert

from regenspine.cli import upgrade_database
from regenspine.db import session_factory, unit_of_work
from regenspine.demo import SEED, _patient_rows, load_demo
from regenspine.patients.models import Patient


def run(backend: str, patients: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        url, drop = fresh_database(backend, Path(tmp))
        try:
            upgrade_database(url)
            factory = session_factory(url)
            started = time.perf_counter()
            with unit_of_work(factory) as s:
                load_demo(s, patients)
            demo_seconds = time.perf_counter() - started
        finally:
            drop()  # type: ignore[operator]
        url, drop = fresh_database(backend, Path(tmp))
        try:
            upgrade_database(url)
            factory = session_factory(url)
            rows = _patient_rows(random.Random(SEED), patients, 1)
            started = time.perf_counter()
            with unit_of_work(factory) as s:
                for i in range(0, patients, 2000):
                    s.execute(insert(Patient), rows[i : i + 2000])
            baseline_seconds = time.perf_counter() - started
        finally:
            drop()  # type: ignore[operator]
    return demo_seconds, baseline_seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    print(
        f"{'backend':<11} {'patients':>8} {'demo s':>8} {'bare insert s':>14} {'ratio':>6}  target"
    )
    for backend in backends:
        demo_s, base_s = run(backend, args.patients)
        verdict = "ok (< 30 s)" if demo_s < 30 else "TOO SLOW"
        print(
            f"{backend:<11} {args.patients:>8} {demo_s:>8.2f} {base_s:>14.2f} "
            f"{demo_s / base_s:>6.2f}  {verdict}"
        )


if __name__ == "__main__":
    main()
