"""Browser fixtures: one live SQLite-backed server, a headless Chromium, a fresh page per test.

The browser is Debian's /usr/bin/chromium driven by Playwright; nothing is downloaded.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS, PASSWORD, Staff, make_staff, serve_in_thread, skip_or_fail

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


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:

    from regenspine.app import create_app
    from regenspine.cli import upgrade_database
    from regenspine.config import get_settings
    from regenspine.db import session_factory

    url = f"sqlite:///{tmp_path_factory.mktemp('web-db') / 'regenspine.db'}"
    upgrade_database(url)
    staff = make_staff(session_factory(url))
    app = create_app(get_settings().model_copy(update={"database_url": url}))

    with serve_in_thread(app) as base_url:
        yield LiveServer(base_url, url, staff)


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
