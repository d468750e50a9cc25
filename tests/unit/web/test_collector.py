"""A serving worker settles its garbage collector (web/collector.py); run in a child process,
since the collector's state belongs to the whole process."""

from __future__ import annotations

import os
import subprocess
import sys

from regenspine.web.collector import YOUNGEST_GENERATION_THRESHOLD

SHOW_COLLECTOR = (
    "import gc\n"
    "from regenspine.app import {factory}\n"
    "{factory}()\n"
    "print(gc.get_freeze_count(), *gc.get_threshold())\n"
)


def _collector_after(factory: str, tmp_path) -> tuple[int, ...]:  # type: ignore[no-untyped-def]
    env = os.environ | {"REGENSPINE_DATABASE_URL": f"sqlite:///{tmp_path / 'clinic.db'}"}
    shown = subprocess.run(  # noqa: S603 (this interpreter, our own script)
        [sys.executable, "-c", SHOW_COLLECTOR.format(factory=factory)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return tuple(int(n) for n in shown.stdout.split())


def test_a_serving_worker_freezes_what_start_up_built_and_collects_less_often(tmp_path):
    frozen, youngest, older, oldest = _collector_after("serve_app", tmp_path)
    # The app's routes, mappers, validators and templates: far more than the interpreter's own.
    assert frozen > 50_000
    assert youngest == YOUNGEST_GENERATION_THRESHOLD
    assert (older, oldest) == (10, 10)


def test_the_app_alone_leaves_the_collector_as_python_sets_it(tmp_path):
    """Tests and command-line tools build the app with create_app: no process-wide change."""
    frozen, youngest, older, oldest = _collector_after("create_app", tmp_path)
    assert frozen == 0
    assert (youngest, older, oldest) == (700, 10, 10)


def test_regenspine_serve_builds_each_worker_with_the_serving_factory(monkeypatch, tmp_path):
    import uvicorn
    from typer.testing import CliRunner

    from regenspine.cli import app
    from regenspine.config import get_settings

    seen: list[tuple[tuple[object, ...], dict[str, object]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: seen.append((a, kw)))
    monkeypatch.setenv("REGENSPINE_DATABASE_URL", f"sqlite:///{tmp_path / 'clinic.db'}")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["serve", "--workers", "2"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    [(args, options)] = seen
    assert args == ("regenspine.app:serve_app",) and options["factory"] is True
