"""Account security pages in a real browser: API token expiry, an administrator's reset of
another user's sign-in, and the two-step sign-in set-up that asks for the password again."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from regenspine.auth import service as auth
from regenspine.auth.actor import SYSTEM_ACTOR
from regenspine.db import session_factory, unit_of_work
from tests.conftest import PASSWORD
from tests.web.conftest import by_label, login, screenshot


def test_an_administrator_revokes_a_colleagues_api_tokens_with_a_reason(
    page, browser, live_server, base_url
):
    """ASVS 5.0 V7.1.1 and V7.4.5 in the browser: a token is made for a chosen number of days
    and shows when it expires; an administrator revokes every token of that colleague, giving
    a reason, and the colleague's page then shows the token as revoked."""
    colleague = live_server.staff.username("lab_technician")
    own = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    try:
        owner = own.new_page()
        login(owner, base_url, colleague)
        owner.goto(base_url + "/account")
        by_label(owner, "Token name").fill("Centrifuge log import")
        by_label(owner, "Valid for (days)").fill("30")
        owner.locator('input[name="scopes"]').first.check()
        owner.get_by_role("button", name="Create token").click()
        expect(owner.get_by_role("status").first).to_contain_text("New token:")
        row = owner.get_by_role("row", name=re.compile("Centrifuge log import"))
        expect(row).to_contain_text("Active")

        login(page, base_url, "admin")
        page.goto(base_url + "/admin/users")
        user_row = page.get_by_role("row", name=re.compile(colleague))
        user_row.get_by_text("Reset sign-in").click()
        user_row.get_by_label("Reason").fill("Laptop with the token was stolen from the lab.")
        screenshot(page, "admin-reset-sign-in.png")
        user_row.get_by_role("button", name="Revoke all API tokens").click()
        expect(page.get_by_role("status")).to_have_text(  # nothing said of two-step sign-in
            f"Done for {colleague}. Browsers signed out: 0. API tokens revoked: 1."
        )
        screenshot(page, "admin-reset-done.png")

        owner.goto(base_url + "/account")
        expect(owner.get_by_role("row", name=re.compile("Centrifuge log import"))).to_contain_text(
            "Revoked"
        )
        screenshot(owner, "account-token-revoked.png")
    finally:
        own.close()


def test_turning_on_two_step_sign_in_asks_for_the_password_again(page, live_server, base_url):
    """ASVS 5.0 V7.5.1: the set-up page asks for the password with the first code; a wrong
    password is named as the problem and nothing is turned on."""
    login(page, base_url, live_server.staff.username("lab_technician"))
    page.goto(base_url + "/account/mfa")
    expect(page.locator(".qr svg")).to_be_visible()
    by_label(page, "Your password, to confirm").fill("not-my-password-123")
    by_label(page, "Code from the app").fill("123456")
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_text("The current password is not correct.")).to_be_visible()
    screenshot(page, "mfa-enrol-wrong-password.png")
    page.goto(base_url + "/account")
    # Still off: the account page offers to turn it on.
    expect(page.locator('a[href="/account/mfa"]')).to_have_text("Turn on")


def test_reloading_the_page_that_shows_a_new_token_makes_no_second_token(
    page, live_server, base_url
):
    """The secret is shown once, in the answer to the form. Reloading that answer sends the
    form again; the browser is told the token was already made, sees no secret, and the list
    still holds one token."""
    login(page, base_url, live_server.staff.username("physiotherapist"))
    page.goto(base_url + "/account")
    by_label(page, "Token name").fill("Exercise app")
    page.locator('input[name="scopes"]').first.check()
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("status").first).to_contain_text("New token:")
    expect(page.get_by_role("status").first).to_contain_text("Copy it now")
    screenshot(page, "account-token-created.png")

    page.reload()  # sends the form again
    expect(page.get_by_role("alert")).to_contain_text(
        "This form was already sent and made the token “Exercise app”."
    )
    expect(page.get_by_text("New token:")).to_have_count(0)
    expect(page.get_by_role("row", name=re.compile("Exercise app"))).to_have_count(1)
    screenshot(page, "account-token-form-sent-again.png")


def test_a_forgotten_password_is_replaced_through_a_one_time_password(
    page, browser, live_server, base_url
):
    """ASVS 5.0 V6.4.1, V6.4.3 in the browser: the administrator sets a one-time password with
    a reason and reads it once; the colleague signs in with it, is taken to *My account* until
    they choose their own, and then reaches the clinic."""
    colleague = "forgetful"  # an account of its own: the other browser tests keep their passwords
    with unit_of_work(session_factory(live_server.database_url)) as s:
        auth.create_user(
            s, SYSTEM_ACTOR, auth.UserCreate(colleague, "Fay Forgetful", "coordinator", PASSWORD)
        )
    login(page, base_url, "admin")
    page.goto(base_url + "/admin/users")
    row = page.get_by_role("row", name=re.compile(colleague))
    row.get_by_text("Reset sign-in").click()
    row.get_by_label("Reason").fill("Forgot the password; identity checked by telephone call-back.")
    row.get_by_role("button", name="Set a one-time password").click()
    status = page.get_by_role("status")
    expect(status).to_contain_text("One-time password:")
    expect(status).to_contain_text("It works for 72 hours")
    one_time = status.locator(".mono").inner_text()
    screenshot(page, "admin-one-time-password.png")

    own = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    try:
        person = own.new_page()
        login(person, base_url, colleague, one_time)
        person.goto(base_url + "/patients")
        expect(person).to_have_url(re.compile(r"/account$"))
        expect(person.get_by_role("alert").first).to_contain_text(
            "You signed in with a one-time password: choose your own password first."
        )
        screenshot(person, "account-choose-own-password.png")
        by_label(person, "Current password").fill(one_time)
        by_label(person, "New password").fill("a-quiet-lighthouse-by-the-fjord-7")
        person.get_by_role("button", name="Change password").click()
        expect(person.get_by_text("one-time password")).to_have_count(0)
        person.goto(base_url + "/patients")
        expect(person).to_have_url(re.compile(r"/patients$"))
    finally:
        own.close()


def test_the_strength_check_names_the_clinic_word_a_new_password_is_built_on(
    page, live_server, base_url
):
    """ASVS 5.0 V6.2.11 while typing: the live check under "New password" says which of the
    clinic's context words the password is built on, before anything is sent."""
    login(page, base_url, live_server.staff.username("physiotherapist"))
    page.goto(base_url + "/account")
    new_password = by_label(page, "New password")
    new_password.press_sequentially("Kregoslup#2026", delay=10)
    strength = page.locator("#strength")
    expect(strength).to_contain_text('This password is built on "kregoslup"')
    screenshot(page, "account-password-built-on-clinic-word.png")
    new_password.fill("")
    new_password.press_sequentially("tulip-Spine-volcano-marmalade", delay=5)
    expect(strength).not_to_contain_text("built on")
