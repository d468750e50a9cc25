"""Stored cross-site scripting in a real Chromium: markup typed into every free-text field that
accepts it (address, city, e-mail, emergency contact, amendment reason, consultation, consent
signature and withdrawal, a sign-in name) is shown as text on every page that shows it, and
never runs.

The content security policy would block inline script even if a page forgot to escape, so the
test does not rely on it: it also checks that no element, attribute or link was injected into
the page and that the payload is there to read, character for character.
"""

from __future__ import annotations

from datetime import date
from urllib.parse import quote

import pytest
from playwright.sync_api import expect
from sqlalchemy import update

from regenspine.app import create_app
from regenspine.config import get_settings
from regenspine.db import session_factory, unit_of_work
from regenspine.patients.models import Patient
from regenspine.patients.rules import normalise_for_search
from tests.conftest import browser_client, person, sign_in
from tests.integration.test_pathway import good_consultation, no_red_flags
from tests.web.conftest import login, screenshot

pytestmark = pytest.mark.browser

SCRIPT = "<script>window.__xss=1</script>"
IMG = '<img src=x onerror="window.__xss=1">'
SVG = '"><svg onload=window.__xss=1>'
JS_URL = "javascript:window.__xss=1"
PAYLOADS = (SCRIPT, IMG, SVG)

# Recorded on every page before its own code runs (Playwright adds it outside the page's CSP).
WATCH = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
    e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
"""
# Anything a successful injection would have added to the page.
INJECTED = """() => ({
    xss: typeof window.__xss,
    csp: window.__csp || [],
    handlers: document.querySelectorAll('[onerror],[onload],[onclick],[onmouseover]').length,
    svgs: document.querySelectorAll('svg').length,
    images: [...document.images].map(i => i.getAttribute('src'))
        .filter(s => !s.startsWith('data:image/svg+xml;base64,')),
    scripts: [...document.scripts].map(s => s.getAttribute('src') || 'inline:' + s.text),
    jsLinks: [...document.querySelectorAll('[href],[src],[action],[formaction]')]
        .map(e => e.getAttribute('href') || e.getAttribute('src') || e.getAttribute('action')
                  || e.getAttribute('formaction'))
        .filter(u => /^\\s*javascript:/i.test(u)),
})"""


def _stored_markup(live_server) -> dict[str, object]:
    """Fills the fields through the same API and forms the clinic uses; returns the paths."""
    app = create_app(get_settings().model_copy(update={"database_url": live_server.database_url}))
    coordinator = sign_in(app, live_server.staff.username("coordinator"))
    doctor = sign_in(app, live_server.staff.username("doctor"))

    born = date(1961, 9, 14)
    registered = coordinator.post(
        "/api/v1/patients",
        json=person(
            "Ksawery",
            "Skryptowski",
            born,
            413,
            address=SCRIPT,
            city=IMG,
            email=JS_URL + "@example.com",
            emergency_contact_name=SVG,
        ),
    )
    assert registered.status_code == 201, registered.text
    patient = registered.json()["id"]
    amended = coordinator.post(
        f"/api/v1/patients/{patient}/amendments",
        json={"changes": {"address": SVG + " flat 2"}, "reason": IMG + " moved house"},
    )
    assert amended.status_code in (200, 201), amended.text

    opened = coordinator.post(
        f"/api/v1/patients/{patient}/episodes",
        json={"condition_code": "disc_protrusion", "region": "lumbar"},
    )
    assert opened.status_code == 201, opened.text
    episode = opened.json()["id"]
    assessed = doctor.post(
        f"/api/v1/episodes/{episode}/assessment",
        json={
            "consultation": good_consultation(
                presenting_complaint=SVG + " low back pain for a year",
                prior_treatments=SCRIPT,
                medications=IMG,
            ),
            "red_flags": no_red_flags(),
        },
    )
    assert assessed.status_code == 201, assessed.text
    assert assessed.json()["episode_state"] == "eligible"
    consented = coordinator.post(
        f"/episodes/{episode}/consent",
        data={"method": "scanned_form", "signed_name": IMG, "confirmed": "yes", "language": "pl"},
        files={"scan": ("consent.pdf", b"%PDF-1.7\n%signed\n", "application/pdf")},
        follow_redirects=False,
    )
    assert consented.status_code == 303, consented.text
    withdrawn = coordinator.post(
        f"/episodes/{episode}/consent/withdraw",
        data={"reason": SVG + " changed my mind"},
        follow_redirects=False,
    )
    assert withdrawn.status_code == 303, withdrawn.text

    # Someone tries to sign in with markup as the user name. A name that matches no account is
    # recorded only as a key (people type passwords there), so the log shows no markup at all.
    anonymous = browser_client(app)
    for username in (SCRIPT, SVG):
        anonymous.get("/login")
        failed = anonymous.post(
            "/login",
            data={
                "username": username,
                "password": "not-the-password-at-all",
                "csrf_token": anonymous.cookies["rs_csrf"],
            },
        )
        assert failed.status_code == 401

    # Names cannot hold markup through any form or the API (validation refuses it), but the
    # pages must not depend on that: one record's names are changed in the database itself, as
    # an import or an old backup could have them.
    born = date(1977, 2, 3)
    other = coordinator.post(
        "/api/v1/patients",
        json=person(
            "Imported",
            "Record",
            born,
            414,
        ),
    )
    assert other.status_code == 201, other.text
    imported = other.json()["id"]
    with unit_of_work(session_factory(live_server.database_url)) as s:
        s.execute(
            update(Patient)
            .where(Patient.id == imported)
            .values(
                given_name=IMG,
                family_name=SCRIPT,
                given_name_norm=normalise_for_search(IMG),
                family_name_norm=normalise_for_search(SCRIPT),
            )
        )
    imported_episode = coordinator.post(
        f"/api/v1/patients/{imported}/episodes",
        json={"condition_code": "disc_protrusion", "region": "lumbar"},
    )
    assert imported_episode.status_code == 201, imported_episode.text
    return {"patient": patient, "episode": episode, "imported": imported}


def _assert_inert(page, dialogs: list[str], where: str) -> None:
    page.wait_for_load_state("networkidle")
    found = page.evaluate(INJECTED)
    assert found["xss"] == "undefined", where
    assert dialogs == [], where
    assert found["csp"] == [], (where, found["csp"])
    assert found["handlers"] == 0 and found["svgs"] == 0, (where, found)
    assert found["images"] == [], (where, found["images"])
    assert found["scripts"] == ["/static/htmx.min.js"], (where, found["scripts"])
    assert found["jsLinks"] == [], (where, found["jsLinks"])


def _open(page, dialogs, url: str, where: str) -> None:
    response = page.goto(url)
    assert response is not None and response.status == 200, (where, response and response.status)
    _assert_inert(page, dialogs, where)


def test_markup_stored_in_every_free_text_field_is_shown_as_text_and_never_runs(
    browser, live_server, base_url
):
    """ASVS 5.0 V1.2.1, V1.2.3 (output encoding for HTML and attributes), V3.2.2 (text set as
    text), V3.4.3 (CSP as a second line), V1.2.2 (no javascript: URLs formed from data)."""
    ids = _stored_markup(live_server)
    patient, episode, imported = ids["patient"], ids["episode"], ids["imported"]
    chart, imported_chart = f"{base_url}/patients/{patient}", f"{base_url}/patients/{imported}"

    contexts = []
    try:
        pages = {}
        for role in ("coordinator", "doctor", "auditor"):
            context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
            contexts.append(context)
            context.add_init_script(WATCH)
            page = context.new_page()
            dialogs: list[str] = []
            page.on("dialog", lambda d, seen=dialogs: (seen.append(d.message), d.dismiss()))
            login(page, base_url, live_server.staff.username(role))
            pages[role] = (page, dialogs)

        page, dialogs = pages["coordinator"]
        # Search results, typed into the live search (HTMX swaps the results in) ...
        page.goto(base_url + "/patients")
        with page.expect_response(lambda r: r.request.method == "POST" and "/patients" in r.url):
            page.get_by_label("Find a patient").fill("<script>")
        expect(page.locator("#results tbody tr")).to_have_count(1)
        row = page.locator("#results tbody tr").first
        expect(row).to_contain_text(SCRIPT.upper() + ", " + IMG)
        _assert_inert(page, dialogs, "live search")
        # ... and loaded as a page, with the markup also in the search box.
        _open(page, dialogs, f"{base_url}/patients?q={quote(SVG)}", "search with markup")
        expect(page.get_by_label("Find a patient")).to_have_value(SVG)

        _open(page, dialogs, chart, "chart")
        facts = page.locator("dl.facts")
        expect(facts).to_contain_text(SVG + " flat 2")  # the amended address
        expect(facts).to_contain_text(IMG)  # city
        expect(facts).to_contain_text(JS_URL + "@example.com")
        history = page.locator("#history")
        for text in (SCRIPT, SVG + " flat 2", IMG + " moved house"):
            expect(history).to_contain_text(text)
        screenshot(page, "stored-markup-chart.png")

        _open(page, dialogs, chart + "/amend", "amendment form")
        expect(page.locator("input[name='address']")).to_have_value(SVG + " flat 2")
        expect(page.locator("input[name='emergency_contact_name']")).to_have_value(SVG)

        _open(page, dialogs, imported_chart, "chart of the imported record")
        expect(page.get_by_role("heading", level=1)).to_have_text(SCRIPT.upper() + ", " + IMG)
        assert page.title().startswith(SCRIPT.upper() + ", " + IMG)

        _open(page, dialogs, f"{base_url}/episodes/{episode}", "episode")
        expect(page.locator("dl.facts")).to_contain_text(f"signed by {IMG}")
        expect(page.locator("dl.facts")).to_contain_text(SVG + " changed my mind")
        expect(page.locator("ol.timeline")).to_contain_text(SVG + " changed my mind")
        screenshot(page, "stored-markup-episode.png")

        page, dialogs = pages["doctor"]
        _open(page, dialogs, f"{base_url}/episodes/{episode}/assess", "consultation form")
        expect(page.locator("input[name='presenting_complaint']")).to_have_value(
            SVG + " low back pain for a year"
        )
        expect(page.locator("input[name='prior_treatments']")).to_have_value(SCRIPT)
        expect(page.locator("input[name='medications']")).to_have_value(IMG)
        _open(page, dialogs, f"{base_url}/worklist", "work list")
        expect(page.locator("main")).to_contain_text(SCRIPT.upper() + ", " + IMG)

        page, dialogs = pages["auditor"]
        _open(page, dialogs, f"{base_url}/audit?action=auth.login_failed", "audit log")
        records = page.locator("tbody")
        expect(records).to_contain_text("unknown:")
        for username in (SCRIPT, SVG):
            expect(records).not_to_contain_text(username)
        screenshot(page, "stored-markup-audit-log.png")
        _open(page, dialogs, f"{base_url}/audit?username={quote(SCRIPT)}", "audit filter")
        expect(page.locator("#a-user")).to_have_value(SCRIPT)
    finally:
        for context in contexts:
            context.close()


def test_the_checks_above_do_see_markup_that_a_page_failed_to_escape(page, base_url):
    """Guards the test above: the same checks, on a page where the payloads are put in as
    markup, report every injected element; the CSP still stops the handlers from running."""
    page.context.add_init_script(WATCH)
    page.goto(base_url + "/login")
    page.evaluate("html => { document.querySelector('main').innerHTML = html; }", "".join(PAYLOADS))
    page.wait_for_function("window.__csp.length > 0")
    found = page.evaluate(INJECTED)
    assert found["svgs"] == 1 and found["handlers"] == 2
    assert found["images"] == ["x"]
    assert "inline:window.__xss=1" in found["scripts"]
    assert found["xss"] == "undefined"
