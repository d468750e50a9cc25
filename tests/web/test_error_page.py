"""What a nurse sees when the clinic's software fails: a page in the clinic's style that says
nothing was saved and gives the reference to quote, never a trace or raw JSON."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.web.conftest import login, screenshot


def test_an_unexpected_error_shows_a_styled_page_with_the_reference(
    page, live_server, base_url, monkeypatch, caplog
) -> None:
    """ASVS 5.0 V16.5.1: a generic message with a reference that ties it to the log entry."""
    from regenspine.patients import service

    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail /etc/passwd")

    login(page, base_url, live_server.staff.username("nurse"))
    monkeypatch.setattr(service, "search_patients", explode)
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if m.type == "error" else None)
    response = page.goto(base_url + "/patients")
    assert response is not None and response.status == 500
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Nothing was saved")
    text = alert.inner_text()
    assert "secret" not in page.content() and "Traceback" not in page.content()
    reference = re.search(r"\b[0-9a-f]{12}\b", text)
    assert reference is not None, text
    assert any(f"reference={reference.group(0)}" in r.getMessage() for r in caplog.records), (
        "the reference on the page names no log entry"
    )
    # The clinic's stylesheet applied (the page is not a bare fallback) and nothing was blocked.
    assert page.evaluate("getComputedStyle(document.querySelector('.card')).display") != "inline"
    assert [v for v in violations if "500" not in v] == []
    screenshot(page, "error-500.png")
