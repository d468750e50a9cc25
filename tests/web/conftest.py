"""Browser fixtures: one live SQLite-backed server, a headless Chromium, a fresh page per test.

The browser is Debian's /usr/bin/chromium driven by Playwright; nothing is downloaded.
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS, PASSWORD, Staff, make_staff, skip_or_fail

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DEFAULT_TIMEOUT_MS = 10_000


@dataclass
class LiveServer:
    base_url: str
    database_url: str
    staff: Staff

    def url(self, path: str) -> str:
        return self.base_url + path


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _wait_healthy(base_url: str, thread: threading.Thread, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last_error: object = None
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("the uvicorn thread stopped before the server answered")
        try:
            with urllib.request.urlopen(base_url + "/healthz", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
                last_error = response.status
        except Exception as exc:  # connection refused while starting
            last_error = exc
        time.sleep(0.05)
    raise RuntimeError(f"the live server did not answer /healthz with 200: {last_error!r}")


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    import uvicorn

    from regenspine.app import create_app
    from regenspine.cli import upgrade_database
    from regenspine.config import get_settings
    from regenspine.db import session_factory

    url = f"sqlite:///{tmp_path_factory.mktemp('web-db') / 'regenspine.db'}"
    upgrade_database(url)
    staff = make_staff(session_factory(url))
    app = create_app(get_settings().model_copy(update={"database_url": url}))

    sock = _free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="regenspine-live-server"
    )
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base_url, thread)
        yield LiveServer(base_url, url, staff)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def base_url(live_server: LiveServer) -> str:
    return live_server.base_url


@pytest.fixture(scope="session")
def playwright_instance():
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        skip_or_fail(f"{CHROMIUM} is missing: install Debian's chromium package")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("the playwright Python package is not installed")
        return
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright_instance):
    browser = playwright_instance.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def by_label(page, label: str):
    """The control whose label is exactly `label` (a required marker `*` may follow).

    Playwright's plain get_by_label matches substrings, and "Phone" would also find
    "Emergency contact phone".
    """
    return page.get_by_label(re.compile(rf"^\s*{re.escape(label)}(\s*\*)?\s*$"))


def login(page, base_url: str, username: str, password: str = PASSWORD) -> None:
    """Signs in through the real form and waits until the browser has left /login."""
    page.goto(base_url + "/login")
    by_label(page, "Username").fill(username)
    by_label(page, "Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    if password == PASSWORD:
        page.wait_for_url(lambda u: "/login" not in u)
    else:
        page.wait_for_load_state()
