"""A coordinator's day in a real headless Chromium: sign in, register, find, amend, switch language.

Every test starts in a fresh browser context against one live server (see conftest.py) and
leaves a full-page screenshot in tests/web/artifacts/.
"""

from __future__ import annotations

import re
from datetime import date
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD, person, valid_patient
from tests.web.conftest import by_label, login, screenshot

pytestmark = pytest.mark.browser

VALID_PESEL = "44051401458"  # 1944-05-14, male
WRONG_CHECK_DIGIT_PESEL = "44051401459"

# Registration form: label -> form key. Selects are filled with select_option.
TEXT_FIELDS = {
    "Given name": "given_name",
    "Family name": "family_name",
    "Date of birth": "date_of_birth",
    "Identifier number": "national_id",
    "Issuing country": "id_country",
    "Phone": "phone",
    "Email": "email",
    "Street address": "address",
    "Postal code": "postal_code",
    "City": "city",
    "Country": "country",
    "Emergency contact name": "emergency_contact_name",
    "Emergency contact phone": "emergency_contact_phone",
}
SELECT_FIELDS = {
    "Sex": "sex",
    "Identifier type": "id_type",
    "Preferred language": "preferred_language",
}


def fill_registration(page, data: dict[str, str]) -> None:
    for label, key in SELECT_FIELDS.items():
        if key in data:
            by_label(page, label).select_option(data[key])
    for label, key in TEXT_FIELDS.items():
        if key in data:
            by_label(page, label).fill(data[key])


def register(page, base_url: str, data: dict[str, str]) -> str:
    """Registers a patient through the form; returns the chart's path (/patients/<id>)."""
    page.goto(base_url + "/patients/new")
    fill_registration(page, data)
    page.get_by_role("button", name="Register patient").click()
    page.wait_for_url(re.compile(r"/patients/\d+\?registered=1$"))
    expect(page.get_by_role("status")).to_have_text("The patient was registered.")
    return re.sub(r"^https?://[^/]+", "", page.url).split("?")[0]


def search(page, base_url: str, query: str) -> None:
    """Types into the live search box; HTMX posts it and replaces #results. What was searched
    for is sent in the body and never appears in the address (ASVS V14.2.1)."""
    if "/patients" not in page.url or "/patients/" in page.url:
        page.goto(base_url + "/patients")
    box = page.get_by_label("Find a patient")

    def is_htmx_search(response) -> bool:
        request = response.request
        return (
            urlsplit(response.url).path == "/patients"
            and request.method == "POST"
            and request.headers.get("hx-request") == "true"
            and parse_qs(request.post_data or "").get("q") == [query]
        )

    with page.expect_response(is_htmx_search):
        box.fill(query)
    assert urlsplit(page.url).query == "", page.url


def table_row(page, text: str):
    return page.locator("tbody tr").filter(has_text=text)


def test_coordinator_signs_in_and_sees_the_patient_list(page, live_server, base_url):
    page.goto(base_url + "/patients")
    expect(page).to_have_url(re.compile(r"/login\?next=/patients$"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    screenshot(page, "login.png")

    login(page, base_url, live_server.staff.username("coordinator"))

    expect(page).to_have_url(base_url + "/patients")
    expect(page.get_by_role("heading", level=1)).to_have_text("Patients")
    expect(page.get_by_label("Find a patient")).to_be_visible()
    expect(page.locator("#results")).to_contain_text(re.compile(r"\b\d+ patients? found\."))
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Patients")).to_be_visible()
    expect(nav.get_by_role("link", name="Register patient")).to_be_visible()
    expect(nav.get_by_role("link", name="Audit log")).to_have_count(0)  # coordinators do not audit
    expect(page.get_by_role("link", name="Test Coordinator · Coordinator")).to_be_visible()
    screenshot(page, "patients-list-en.png")


def test_coordinator_registers_a_patient_and_finds_them_by_pesel(page, live_server, base_url):
    login(page, base_url, live_server.staff.username("coordinator"))
    page.goto(base_url + "/patients/new")
    expect(page.get_by_role("heading", level=1)).to_have_text("Register patient")
    fill_registration(
        page,
        valid_patient(
            national_id=VALID_PESEL,
            email="jan.kowalski@example.org",
            postal_code="30-001",
            address="ul. Floriańska 1",
        ),
    )
    screenshot(page, "register-filled.png")
    page.get_by_role("button", name="Register patient").click()

    page.wait_for_url(re.compile(r"/patients/\d+\?registered=1$"))
    chart_path = re.sub(r"^https?://[^/]+", "", page.url).split("?")[0]
    expect(page.get_by_role("status")).to_have_text("The patient was registered.")
    expect(page.get_by_role("heading", level=1)).to_have_text("KOWALSKI, Jan")
    screenshot(page, "chart-registered.png")

    page.goto(base_url + "/patients")
    search(page, base_url, VALID_PESEL)
    results = page.locator("#results")
    expect(results).to_contain_text("1 patient found.")
    row = table_row(page, VALID_PESEL)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("KOWALSKI, Jan")
    expect(row).to_contain_text("May 14, 1944")
    screenshot(page, "patients-search-by-pesel.png")

    row.get_by_role("link", name="KOWALSKI, Jan").click()
    expect(page).to_have_url(base_url + chart_path)
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text(VALID_PESEL)
    expect(facts).to_contain_text("Male")
    expect(facts).to_contain_text("May 14, 1944")
    barcode = page.get_by_role("img", name=re.compile(r"Barcode of medical record number"))
    expect(barcode).to_be_visible()
    screenshot(page, "chart.png")


def test_invalid_pesel_shows_a_clear_message_and_registers_nothing(page, live_server, base_url):
    login(page, base_url, live_server.staff.username("coordinator"))
    page.goto(base_url + "/patients/new")
    fill_registration(
        page,
        valid_patient(
            given_name="Antoni", family_name="Błędny", national_id=WRONG_CHECK_DIGIT_PESEL
        ),
    )
    page.get_by_role("button", name="Register patient").click()

    expect(page).to_have_url(base_url + "/patients/new")  # re-rendered, not redirected
    pesel_input = by_label(page, "Identifier number")
    expect(pesel_input).to_have_attribute("aria-invalid", "true")
    expect(pesel_input).to_have_value(WRONG_CHECK_DIGIT_PESEL)  # what was typed is kept
    error = page.locator("#e-national_id")
    expect(error).to_have_text("The PESEL check digit is wrong: please re-check the number.")
    # The message is tied to the field for screen readers, and sits right under it.
    assert "e-national_id" in (pesel_input.get_attribute("aria-describedby") or "")
    field_box, error_box = pesel_input.bounding_box(), error.bounding_box()
    assert field_box and error_box
    assert 0 <= error_box["y"] - (field_box["y"] + field_box["height"]) < 80
    expect(by_label(page, "Given name")).to_have_value("Antoni")
    screenshot(page, "register-invalid-pesel.png")

    search(page, base_url, WRONG_CHECK_DIGIT_PESEL)
    expect(page.locator("#results")).to_contain_text("0 patients found.")
    expect(page.locator("#results tbody tr")).to_have_count(0)
    search(page, base_url, "Błędny")
    expect(page.locator("#results")).to_contain_text("0 patients found.")


def test_amending_a_field_with_a_reason_shows_it_in_the_history(page, live_server, base_url):
    login(page, base_url, live_server.staff.username("coordinator"))
    born = date(1961, 3, 9)
    chart = register(
        page,
        base_url,
        person(
            "Maria",
            "Nowak",
            born,
            123,
            "female",
            phone="+48 600 111 222",
        ),
    )
    expect(page.locator("#history")).to_contain_text("No corrections so far.")

    page.get_by_role("link", name="Amend record").click()
    expect(page).to_have_url(base_url + chart + "/amend")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Amend record of NOWAK, Maria")
    phone = by_label(page, "Phone")
    expect(phone).to_have_value("+48 600 111 222")
    phone.fill("+48 601 333 444")
    reason = "Patient gave a new mobile number at reception."
    by_label(page, "Reason for the correction").fill(reason)
    page.get_by_role("button", name="Save amendment").click()

    expect(page).to_have_url(base_url + chart + "?amended=1")
    expect(page.get_by_role("status")).to_have_text("The amendment was saved.")
    expect(page.locator("dl.facts")).to_contain_text("+48 601 333 444")
    rows = page.locator("#history tbody tr")
    expect(rows).to_have_count(1)
    cells = rows.first.locator("td")
    expect(cells.nth(1)).to_have_text("Phone")
    expect(cells.nth(2)).to_have_text("+48 600 111 222")
    expect(cells.nth(2).locator("del")).to_have_count(1)  # the old value is shown struck through
    expect(cells.nth(3)).to_have_text("+48 601 333 444")
    expect(cells.nth(4)).to_have_text(reason)
    expect(cells.nth(5)).to_have_text("Test Coordinator")
    screenshot(page, "chart-amended.png")


def test_amendment_without_reason_is_refused_and_changes_nothing(page, live_server, base_url):
    login(page, base_url, live_server.staff.username("coordinator"))
    born = date(1975, 11, 30)
    chart = register(
        page,
        base_url,
        person(
            "Piotr",
            "Wiśniewski",
            born,
            456,
            phone="+48 602 555 666",
        ),
    )

    page.goto(base_url + chart + "/amend")
    by_label(page, "Phone").fill("+48 603 777 888")
    page.get_by_role("button", name="Save amendment").click()

    expect(page).to_have_url(base_url + chart + "/amend")
    reason = by_label(page, "Reason for the correction")
    expect(reason).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#e-reason")).to_contain_text("Give the reason for the correction")
    expect(by_label(page, "Phone")).to_have_value("+48 603 777 888")  # the edit is not thrown away
    screenshot(page, "amend-without-reason.png")

    page.goto(base_url + chart)
    expect(page.locator("dl.facts")).to_contain_text("+48 602 555 666")
    expect(page.locator("dl.facts")).not_to_contain_text("+48 603 777 888")
    expect(page.locator("#history")).to_contain_text("No corrections so far.")
    expect(page.locator("#history tbody tr")).to_have_count(0)


def test_switching_to_polish_translates_the_pages(page, live_server, base_url):

    # The nurse, not the coordinator: the choice is saved on the account, and other tests
    # expect the coordinator to keep seeing English.
    login(page, base_url, live_server.staff.username("nurse"))
    expect(page.locator("html")).to_have_attribute("lang", "en")
    try:
        page.get_by_role("button", name="Polski").click()
        page.wait_for_load_state()
        expect(page).to_have_url(base_url + "/patients")
        expect(page.locator("html")).to_have_attribute("lang", "pl")
        expect(page.get_by_role("button", name="Polski")).to_have_attribute("aria-current", "true")
        page.goto(base_url + "/patients/new")
        expect(page.locator("html")).to_have_attribute("lang", "pl")  # it sticks across pages
        page.goto(base_url + "/patients")
        expect(page.locator("html")).to_have_attribute("lang", "pl")
        screenshot(page, "patients-list-pl.png")
        expect(page.get_by_role("heading", level=1)).to_have_text("Pacjenci")
        # More Polish pages for the eye: a form with its validation messages, and a chart.
        page.goto(base_url + "/patients/new")
        page.locator("main form button[type=submit]").click()
        expect(page.locator("p.error").first).to_be_visible()
        expect(page.locator("html")).to_have_attribute("lang", "pl")
        screenshot(page, "register-errors-pl.png")
        page.goto(base_url + "/patients")
        first = page.locator("#results tbody tr a").first
        if first.count():
            first.click()
            expect(page.locator("html")).to_have_attribute("lang", "pl")
            screenshot(page, "chart-pl.png")
    finally:
        page.get_by_role("button", name="English").click()
        page.wait_for_load_state()
    expect(page.locator("html")).to_have_attribute("lang", "en")


def test_sign_in_with_wrong_password_shows_a_generic_message(page, live_server, base_url):
    username = live_server.staff.username("lab_technician")
    login(page, base_url, username, password="not-the-password-at-all")

    expect(page).to_have_url(base_url + "/login")
    alert = page.get_by_role("alert")
    expect(alert).to_have_text(
        "Sign-in failed. Check your username and password. After several failed attempts the "
        "account is locked for a while."
    )
    expect(by_label(page, "Username")).to_have_value(username)  # kept for a second try
    expect(by_label(page, "Password")).to_have_value("")  # never echoed back
    screenshot(page, "login-failed.png")

    # An unknown account gets exactly the same words.
    login(page, base_url, "nobody-by-this-name", password="not-the-password-at-all")
    expect(page.get_by_role("alert")).to_have_text(alert.inner_text())
    expect(page.get_by_role("navigation", name="Main")).to_have_count(0)


# The favicon loads in the background; leaving a page before it arrives aborts that request,
# which says nothing about the page itself.
FAVICON = "/static/favicon.svg"


def test_page_has_no_console_errors_or_csp_violations(page, browser, live_server, base_url) -> None:
    problems: list[str] = []

    def watch(p) -> None:
        # CSP violations reach the console as errors in Chromium; the listener makes sure.
        p.add_init_script(
            "document.addEventListener('securitypolicyviolation', e => console.error("
            "'CSP violation: ' + e.violatedDirective + ' blocked ' + e.blockedURI));"
        )

        def on_console(m) -> None:
            source = m.location.get("url", "")
            if m.type in ("error", "warning") and not source.endswith(FAVICON):
                problems.append(f"{p.url}: console {m.type}: {m.text} ({source})")

        def on_response(r) -> None:
            if r.status >= 400:
                problems.append(f"{p.url}: HTTP {r.status} for {r.url}")

        p.on("console", on_console)
        p.on("response", on_response)
        p.on("pageerror", lambda e: problems.append(f"{p.url}: page error: {e}"))
        p.on(
            "requestfailed",
            lambda r: (
                None
                if r.url.endswith(FAVICON)
                else problems.append(f"{p.url}: request failed: {r.url} ({r.failure})")
            ),
        )

    watch(page)
    login(page, base_url, live_server.staff.username("coordinator"))
    born = date(1988, 7, 21)
    chart = register(
        page,
        base_url,
        person(
            "Ewa",
            "Zielińska",
            born,
            789,
            "female",
        ),
    )
    for path in ("/patients", "/patients/new", chart, chart + "/amend", "/account"):
        page.goto(base_url + path)
        page.wait_for_load_state("networkidle")
    search(page, base_url, "Zielińska")  # exercises htmx under the CSP
    expect(page.locator("#results tbody tr")).to_have_count(1)
    page.goto(base_url + "/account")
    screenshot(page, "account.png")

    auditor = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    try:
        audit_page = auditor.new_page()
        watch(audit_page)
        login(audit_page, base_url, live_server.staff.username("auditor"))
        audit_page.goto(base_url + "/audit")
        audit_page.wait_for_load_state("networkidle")
        expect(audit_page.get_by_role("heading", level=1)).to_have_text("Audit log")
        expect(audit_page.locator("tbody tr").first).to_be_visible()
        screenshot(audit_page, "audit-log.png")
    finally:
        auditor.close()

    assert problems == []


def test_layout_works_at_tablet_width(page, live_server, base_url):
    page.set_viewport_size({"width": 768, "height": 1024})
    login(page, base_url, live_server.staff.username("coordinator"))
    born = date(1990, 1, 2)
    chart = register(
        page,
        base_url,
        person(
            "Krzysztof",
            "Wojciechowski-Kamiński",
            born,
            321,
            address="ul. Długa 12/4",
            postal_code="31-147",
            emergency_contact_name="Agnieszka Wojciechowska",
            emergency_contact_phone="+48 604 000 111",
        ),
    )

    overflow = "() => [document.documentElement.scrollWidth, window.innerWidth]"
    for path, shot in (
        ("/patients", "patients-list-tablet.png"),
        ("/patients/new", "register-tablet.png"),
        (chart, "chart-tablet.png"),
    ):
        page.goto(base_url + path)
        page.wait_for_load_state("networkidle")
        scroll_width, inner_width = page.evaluate(overflow)
        screenshot(page, shot)
        assert scroll_width <= inner_width, (
            f"{path} scrolls sideways: {scroll_width} > {inner_width}"
        )


@pytest.mark.browser
def test_password_strength_meter_updates_while_typing(page, live_server, base_url):
    login(page, base_url, live_server.staff.username("physiotherapist"))
    page.goto(base_url + "/account")
    new_password = by_label(page, "New password")
    expect(new_password).to_have_attribute("hx-post", "/account/password-strength", timeout=1_000)
    new_password.press_sequentially("correct horse battery staple")
    expect(page.locator("#strength .meter")).to_be_visible(timeout=3_000)
    screenshot(page, "account-password-strength.png")


@pytest.mark.browser
def test_changing_the_password_keeps_this_browser_signed_in_and_says_the_others_were_not(
    page, live_server, base_url
):
    """The browser that changes the password stays signed in and is told that every other
    browser of that user was signed out; the password is then changed back for other tests."""
    username = live_server.staff.username("physiotherapist")
    login(page, base_url, username)
    temporary = "a-quiet-lighthouse-by-the-fjord-7"
    for current, new in ((PASSWORD, temporary), (temporary, PASSWORD)):
        page.goto(base_url + "/account")
        by_label(page, "Current password").fill(current)
        by_label(page, "New password").fill(new)
        page.get_by_role("button", name="Change password").click()
        expect(page.get_by_role("status")).to_contain_text(
            "Your other signed-in browsers were signed out.", timeout=3_000
        )
        if new == temporary:
            screenshot(page, "account-password-changed.png")
    page.goto(base_url + "/patients")
    expect(page).to_have_url(re.compile(r"/patients$"))  # still signed in


@pytest.mark.browser
def test_a_user_signs_out_a_browser_they_left_signed_in_elsewhere(
    page, browser, live_server, base_url
):
    """ASVS 5.0 V7.5.2 in the browser: the account page lists the user's other browser by name
    and, with the password given again, signs it out; that browser is then sent to sign in."""
    username = live_server.staff.username("auditor")
    elsewhere = browser.new_context(
        user_agent="Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 "
        "Firefox/133.0",
        locale="en-US",
    )
    try:
        left_open = elsewhere.new_page()
        login(left_open, base_url, username)
        login(page, base_url, username)
        page.goto(base_url + "/account")
        browsers = page.locator("#browsers")
        expect(browsers.get_by_role("table")).to_contain_text("Firefox on Windows")
        expect(browsers.get_by_role("table")).to_contain_text("This browser")
        screenshot(page, "account-signed-in-browsers.png")

        # Earlier tests of this live server may have left this user signed in elsewhere too.
        others = browsers.locator('input[name="session"]').count() - 1  # less "all others"
        assert others >= 1
        browsers.get_by_label("Your password, to confirm").fill(PASSWORD)
        browsers.get_by_role("button", name="Sign out").click()
        expect(browsers.get_by_role("status")).to_have_text(
            "1 browser was signed out." if others == 1 else f"{others} browsers were signed out."
        )
        expect(browsers).to_contain_text("No other browser is signed in as you.")

        left_open.goto(base_url + "/patients")
        expect(left_open).to_have_url(re.compile(r"/login\?next="))
        page.goto(base_url + "/patients")
        expect(page).to_have_url(re.compile(r"/patients$"))  # this browser: still signed in
    finally:
        elsewhere.close()


def test_a_search_and_its_pages_never_put_the_name_in_the_address(page, live_server, base_url):
    """ASVS 5.0 V14.2.1 in the browser: the live search and its Next/Previous buttons post what
    was searched for; the address stays /patients and the browser's history holds no name."""
    from regenspine.auth.actor import SYSTEM_ACTOR
    from regenspine.db import session_factory, unit_of_work
    from regenspine.patients import service

    with unit_of_work(session_factory(live_server.database_url)) as s:
        for n in range(27):
            service.register_patient(
                s, SYSTEM_ACTOR, person("Ola", "Zawadzka", date(1971, 3, 1 + n), n, sex="female")
            )
    login(page, base_url, live_server.staff.username("nurse"))
    page.goto(base_url + "/patients")
    entries = page.evaluate("history.length")
    search(page, base_url, "Zawadzka")
    expect(page.locator("#results")).to_contain_text("27 patients found. Page 1 of 2.")
    page.get_by_role("button", name="Next").click()
    expect(page.locator("#results")).to_contain_text("Page 2 of 2.")
    expect(page.locator("#results tbody tr")).to_have_count(2)
    screenshot(page, "patients-search-page-2.png")
    page.get_by_role("button", name="Previous").click()
    expect(page.locator("#results")).to_contain_text("Page 1 of 2.")
    assert urlsplit(page.url).query == "", page.url
    assert page.evaluate("history.length") == entries  # no history entry per search or page
