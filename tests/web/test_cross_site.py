"""Another site cannot make a signed-in browser start the clinic's counted exports.

A real Chromium signed in as an auditor follows a link on a page of another site (a second
server on `localhost`, while the clinic is on `127.0.0.1`: different sites to a browser).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from regenspine.audit.models import AuditRecord
from regenspine.db import session_factory
from tests.web.conftest import login, screenshot


@pytest.fixture
def other_site(base_url: str) -> Iterator[str]:
    """A page on another site with a link to the clinic's audit export."""
    body = (
        "<!doctype html><title>Win a prize</title>"
        f'<a id="prize" href="{base_url}/audit/export.csv">Claim your prize</a>'
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _exports(database_url: str) -> int:
    with session_factory(database_url)() as s:
        return (
            s.scalar(
                select(func.count())
                .select_from(AuditRecord)
                .where(AuditRecord.action == "audit.export")
            )
            or 0
        )


def test_a_link_on_another_site_cannot_start_an_audit_export(
    page, live_server, base_url, other_site
):
    """ASVS 5.0 V3.5.3: the export is counted (20 per account in 15 minutes) and recorded.
    Followed from another site's link, with the auditor's session cookie, it is refused in
    words before anything is counted or recorded; from the audit page's own button it works."""
    login(page, base_url, live_server.staff.username("auditor"))
    before = _exports(live_server.database_url)

    page.goto(other_site)
    page.locator("#prize").click()
    page.wait_for_load_state()
    expect(page.get_by_role("alert")).to_contain_text(
        "This can only be started from the clinic's own pages"
    )
    screenshot(page, "cross-site-export-refused.png")
    assert _exports(live_server.database_url) == before

    page.goto(base_url + "/audit")
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    assert download.value.suggested_filename == "audit-log.csv"
    assert _exports(live_server.database_url) == before + 1
