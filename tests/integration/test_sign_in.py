"""Signing in over HTTP: throttling, session rotation and timeouts, logout, MFA, API tokens."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from datetime import timedelta

import pyotp
import pytest
from sqlalchemy import func, select, update

from regenspine.audit.models import AuditRecord
from regenspine.auth import service as auth
from regenspine.auth.models import ApiToken, RecoveryCode, User, WebSession
from regenspine.auth.permissions import Role
from regenspine.db import unit_of_work, utcnow
from regenspine.mail.models import OutboxMessage
from tests.conftest import PASSWORD, browser_client, sign_in, sign_in_client


def _login(client, username: str, password: str):
    client.get("/login")
    return client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": client.cookies["rs_csrf"]},
        follow_redirects=False,
    )


def test_five_failed_sign_ins_lock_the_account_even_for_the_right_password(app, staff, factory):
    client = browser_client(app)
    for _ in range(5):
        r = _login(client, "nurse", "wrong-password-123")
        assert r.status_code == 401
        assert "Sign-in failed" in r.text
    locked = _login(client, "nurse", PASSWORD)
    assert locked.status_code == 401
    # The message is the same as for a wrong password: it reveals nothing about the lock.
    assert "Sign-in failed" in locked.text
    with factory() as s:
        failures = s.scalars(
            select(AuditRecord).where(AuditRecord.action == "auth.login_failed")
        ).all()
    assert len(failures) == 6
    assert {f.outcome for f in failures} == {"refused"}
    reasons = [json.loads(f.detail)["reason"] for f in failures]
    assert reasons == ["wrong_password"] * 5 + ["locked"]


def test_lock_expires_after_the_window(app, staff, monkeypatch):
    client = browser_client(app)
    for _ in range(5):
        _login(client, "nurse", "wrong-password-123")
    later = utcnow() + timedelta(minutes=16)
    monkeypatch.setattr(auth, "utcnow", lambda: later)
    assert _login(client, "nurse", PASSWORD).status_code == 303


def test_signing_in_to_ones_own_account_does_not_clear_the_guesses_at_others(app, staff, factory):
    """ASVS 5.0 V6.3.1: failures from an address were counted only since the last successful
    sign-in from it, by anyone, so a guesser with one valid password could sign in to their own
    account between rounds and guess on without end. Now only the account that signed in has
    its own failures from that address forgiven (a colleague's typo)."""
    guesser = browser_client(app)
    assert _login(guesser, "nurse", "wrong-password-123").status_code == 401
    assert _login(browser_client(app), "nurse", PASSWORD).status_code == 303  # forgiven
    for n in range(7):  # 28 guesses, four per name: no single name locks
        for _ in range(4):
            assert _login(guesser, f"guess-{n}", "wrong-password-123").status_code == 401
    assert _login(browser_client(app), "doctor", PASSWORD).status_code == 303  # the guesser's own
    for _ in range(2):  # the 29th and 30th guess from the address
        assert _login(guesser, "guess-7", "wrong-password-123").status_code == 401
    assert _login(browser_client(app), "physiotherapist", PASSWORD).status_code == 401
    with factory() as s:
        last = s.scalars(
            select(AuditRecord)
            .where(AuditRecord.action == "auth.login_failed")
            .order_by(AuditRecord.id.desc())
            .limit(1)
        ).one()
    assert (last.entity_id, json.loads(last.detail)["reason"]) == ("physiotherapist", "locked")


def test_a_sign_in_name_with_a_control_character_is_an_ordinary_failure(app, staff, factory):
    """PostgreSQL cannot compare a name holding NUL: it once answered 500."""
    r = _login(browser_client(app), "nurse\x00", PASSWORD)
    assert r.status_code == 401 and "Sign-in failed" in r.text


def test_unknown_user_gets_the_same_message_as_a_wrong_password(app, staff):
    client = browser_client(app)
    unknown = _login(client, "nobody-here", "whatever-password-1")
    wrong = _login(client, "nurse", "whatever-password-1")
    assert unknown.status_code == wrong.status_code == 401
    assert "Sign-in failed" in unknown.text and "Sign-in failed" in wrong.text


def test_sign_in_sets_a_new_http_only_session_cookie_and_ends_the_previous_one(app, staff, factory):
    client = browser_client(app)
    first = _login(client, "doctor", PASSWORD)
    cookie_header = first.headers["set-cookie"]
    assert "HttpOnly" in cookie_header and "SameSite=lax" in cookie_header.replace("Lax", "lax")
    old_token = client.cookies["rs_session"]
    _login(client, "doctor", PASSWORD)
    new_token = client.cookies["rs_session"]
    assert new_token != old_token
    with factory() as s:
        old = s.get(WebSession, auth.sha256_hex(old_token))
    assert old.ended_at is not None and old.end_reason == "rotated"


def test_logout_invalidates_the_session_on_the_server(app, staff):
    client = sign_in(app, "doctor")
    token = client.cookies["rs_session"]
    signed_out = client.post("/logout", follow_redirects=False)
    assert signed_out.status_code == 303
    # ASVS V14.3.1: the browser drops what it cached or stored of the signed-in pages.
    assert signed_out.headers["clear-site-data"] == '"cache", "storage"'
    replay = browser_client(app)
    replay.cookies.set("rs_session", token)
    assert replay.get("/api/v1/me").status_code == 401


def _assert_browser_told_to_forget_the_session(response) -> None:  # type: ignore[no-untyped-def]
    """ASVS V7.4.1, V14.3.1: the first answer to a browser whose session has ended deletes the
    session cookie and clears what the signed-in pages left in its cache and storage."""
    assert response.headers["clear-site-data"] == '"cache", "storage"'
    deletions = [c for c in response.headers.get_list("set-cookie") if c.startswith("rs_session=")]
    assert len(deletions) == 1 and "max-age=0" in deletions[0].lower(), deletions


def test_session_ends_after_30_minutes_idle_and_after_12_hours_in_any_case(
    app, staff, monkeypatch, factory
):
    client = sign_in(app, "doctor")
    start = utcnow()
    monkeypatch.setattr(auth, "utcnow", lambda: start + timedelta(minutes=29))
    assert client.get("/api/v1/me").status_code == 200
    monkeypatch.setattr(auth, "utcnow", lambda: start + timedelta(minutes=60))
    timed_out = client.get("/api/v1/me")
    assert timed_out.status_code == 401
    _assert_browser_told_to_forget_the_session(timed_out)
    assert "rs_session" not in client.cookies
    with factory() as s:
        ended = s.scalars(select(WebSession).where(WebSession.end_reason == "idle_timeout")).all()
    assert len(ended) == 1
    # Signing in again from that browser starts a session that the clean-up does not undo.
    del client.headers["X-CSRF-Token"]  # the ended session's, which a sign-in form never sends
    sign_in_client(client, "doctor")
    assert client.get("/api/v1/me").status_code == 200
    assert "clear-site-data" not in client.get("/api/v1/me").headers

    monkeypatch.undo()
    busy = sign_in(app, "nurse")
    start = utcnow()
    for minutes in range(20, 12 * 60, 20):  # active every 20 minutes
        monkeypatch.setattr(auth, "utcnow", lambda m=minutes: start + timedelta(minutes=m))
        assert busy.get("/api/v1/me").status_code == 200
    monkeypatch.setattr(auth, "utcnow", lambda: start + timedelta(hours=12, minutes=1))
    assert busy.get("/api/v1/me").status_code == 401


def test_mfa_user_needs_the_code_and_a_recovery_code_works_once(app, staff, factory):
    client = sign_in(app, "medical-director")
    page = client.get("/account/mfa")
    assert page.status_code == 200 and "<svg" in page.text
    with factory() as s:
        secret = s.scalar(select(User.mfa_secret).where(User.username == "medical-director"))
    wrong = client.post("/account/mfa", data={"password": PASSWORD, "code": "000000"})
    assert wrong.status_code == 422
    # ASVS 5.0 V7.5.1: a taken-over browser cannot tie the account to its own authenticator.
    no_password = client.post(
        "/account/mfa", data={"password": "not-my-password-123", "code": pyotp.TOTP(secret).now()}
    )
    assert no_password.status_code == 422
    assert "The current password is not correct." in no_password.text
    with factory() as s:
        assert s.scalar(select(User.mfa_enabled).where(User.username == "medical-director")) is (
            False
        )
    ok = client.post("/account/mfa", data={"password": PASSWORD, "code": pyotp.TOTP(secret).now()})
    assert ok.status_code == 200
    codes = _recovery_codes(ok.text)
    assert len(codes) == 10 and len(set(codes)) == 10

    fresh = browser_client(app)
    assert _login(fresh, "medical-director", PASSWORD).headers["location"].startswith("/login/mfa")
    assert fresh.get("/patients", follow_redirects=False).headers["location"] == "/login/mfa"
    assert fresh.get("/api/v1/me").status_code == 401
    bad = fresh.post("/login/mfa", data={"code": "123456", "csrf_token": _csrf(fresh)})
    assert bad.status_code == 401
    typed = codes[0].upper().replace("-", " ")  # as read out or typed from the printout
    good = fresh.post(
        "/login/mfa", data={"code": typed, "csrf_token": _csrf(fresh)}, follow_redirects=False
    )
    assert good.status_code == 303
    assert fresh.get("/api/v1/me").status_code == 200

    again = browser_client(app)
    _login(again, "medical-director", PASSWORD)
    reused = again.post("/login/mfa", data={"code": codes[0], "csrf_token": _csrf(again)})
    assert reused.status_code == 401


def test_a_second_copy_of_the_two_step_form_leaves_the_new_session_in_place(app, staff, factory):
    """The second step replaces the half-signed-in session with a new one. A second copy of
    the form sent before the first answer came back (a double click) carries the replaced
    session's cookie. Its answer must not tell the browser to forget the session cookie, which
    by then holds the new session; any other ended session is forgotten (V7.4.1)."""
    client = sign_in(app, "medical-director")
    totp = _enrolment_totp(client, factory)
    codes = _recovery_codes(
        client.post("/account/mfa", data={"password": PASSWORD, "code": totp.now()}).text
    )
    browser = browser_client(app)
    _login(browser, "medical-director", PASSWORD)
    replaced, csrf = browser.cookies["rs_session"], _csrf(browser)
    first = browser.post(
        "/login/mfa", data={"code": codes[0], "csrf_token": csrf}, follow_redirects=False
    )
    assert first.status_code == 303
    second_copy = browser_client(app)  # what the browser sent with the first copy
    second_copy.cookies.set("rs_session", replaced)
    second_copy.cookies.set("rs_csrf", browser.cookies["rs_csrf"])
    late = second_copy.post(
        "/login/mfa", data={"code": codes[1], "csrf_token": csrf}, follow_redirects=False
    )
    assert "clear-site-data" not in late.headers
    assert not [c for c in late.headers.get_list("set-cookie") if c.startswith("rs_session=")]
    assert browser.get("/api/v1/me").status_code == 200


RECOVERY_CODE = re.compile(r"<li>([a-z2-7]{4}(?:-[a-z2-7]{4}){5})</li>")


def _recovery_codes(page: str) -> list[str]:
    """The recovery codes the page shows: 24 base32 characters (120 bits), in groups of 4."""
    return RECOVERY_CODE.findall(page)


def _enrolment_totp(client, factory, username: str = "medical-director") -> pyotp.TOTP:
    """Opens the enrolment page (which draws the user's secret) and returns the authenticator
    the user would scan."""
    client.get("/account/mfa")
    with factory() as s:
        secret = s.scalar(select(User.mfa_secret).where(User.username == username))
    return pyotp.TOTP(secret)


NEW_PASSWORD = "a-quiet-lighthouse-by-the-fjord-7"


def _csrf(client) -> str:
    page = client.get("/login/mfa")
    return page.text.split('name="csrf_token" value="')[1].split('"')[0]


def test_production_requires_two_step_sign_in_of_every_role_in_the_browser_and_by_token(
    app, staff, factory, monkeypatch
):
    """ASVS 5.0 V6.3.3: in production every role reads patient data only after a second step.
    V6.3.4: an API token is no way round it. An account that owes enrolment can make no token
    (page or API), and a token made before the rule applied is refused until its owner has
    turned two-step sign-in on."""
    from regenspine.config import get_settings

    with unit_of_work(factory) as s:
        _, made_before = auth.create_api_token(
            s, staff.actor(Role.NURSE), "ward tablet", ["patient:read"]
        )
    settings = get_settings()
    monkeypatch.setattr(type(settings), "mfa_enforced", property(lambda self: True))
    for role in Role:
        client = sign_in(app, staff.username(role))
        pages = client.get("/patients", follow_redirects=False)
        assert pages.headers["location"] == "/account/mfa", role
        assert client.get("/api/v1/patients").status_code == 403, role
        by_api = client.post("/api/v1/tokens", json={"name": "x", "scopes": ["patient:read"]})
        assert by_api.status_code == 403, (role, by_api.text)
        assert by_api.json()["detail"] == (
            "Your role must turn on two-step sign-in before using the clinic."
        )
        account = client.get("/account")
        assert "Turn on two-step sign-in first" in account.text
        assert 'name="form_key"' not in account.text  # no token form to fill in
        by_page = client.post(
            "/account/tokens",
            data={
                "name": "x",
                "scopes": "patient:read",
                "days_valid": "30",
                "form_key": auth.new_form_key(),
            },
        )
        assert by_page.status_code == 403, (role, by_page.text)
        assert "Turn on two-step sign-in first" in by_page.text
    with factory() as s:
        assert s.scalar(select(func.count(ApiToken.id))) == 1

    old = _bearer(app, made_before)
    for path in ("/api/v1/me", "/api/v1/patients?q=a"):  # a write path and a read-only one
        refused = old.get(path)
        assert refused.status_code == 403, (path, refused.text)
        assert "must turn on two-step sign-in before the token can be used" in refused.text
    # A clinic that narrows the list (REGENSPINE_MFA_REQUIRED_ROLES) lets the others in.
    monkeypatch.setattr(settings, "mfa_required_roles", ("doctor",))
    assert old.get("/api/v1/me").status_code == 200
    assert sign_in(app, "nurse").get("/patients", follow_redirects=False).status_code == 200
    assert sign_in(app, "doctor").get("/patients", follow_redirects=False).status_code == 303


def test_api_token_is_limited_to_its_scopes_and_stops_working_when_revoked(app, staff):
    browser = sign_in(app, "coordinator")
    created = browser.post(
        "/api/v1/tokens", json={"name": "lab system", "scopes": ["patient:read"]}
    )
    assert created.status_code == 201, created.text
    secret = created.json()["token"]
    assert secret.startswith("rst_")
    api = browser_client(app)
    api.headers["Authorization"] = f"Bearer {secret}"
    assert api.get("/api/v1/patients").status_code == 200
    refused = api.post(
        "/api/v1/patients",
        json={
            "given_name": "Jan",
            "family_name": "Nowak",
            "date_of_birth": "1944-05-14",
            "sex": "male",
            "id_type": "pesel",
            "national_id": "44051401458",
        },
    )
    assert refused.status_code == 403
    assert (
        api.post("/api/v1/tokens", json={"name": "x", "scopes": ["patient:read"]}).status_code
        == 400
    )
    too_wide = browser.post("/api/v1/tokens", json={"name": "x", "scopes": ["user:manage"]})
    assert too_wide.status_code == 422
    assert browser.delete(f"/api/v1/tokens/{created.json()['id']}").status_code == 204
    assert api.get("/api/v1/patients").status_code == 401


def test_a_token_of_any_scope_cannot_manage_tokens_or_reach_the_account_pages(app, staff, factory):
    """ASVS 5.0 V8.2.1: a token scoped to the catalogue listed and revoked its owner's other
    tokens, and on /account/mfa read a fresh two-step secret (/account answered 500). The
    account pages are for the person in a browser; tokens are managed there."""
    browser = sign_in(app, "doctor")
    made = [
        browser.post("/api/v1/tokens", json={"name": name, "scopes": ["catalog:read"]}).json()
        for name in ("catalogue reader", "practice system")
    ]
    api = browser_client(app)
    api.headers["Authorization"] = f"Bearer {made[0]['token']}"
    assert api.get("/api/v1/catalog/conditions").status_code == 200  # the scope still works
    listed = api.get("/api/v1/tokens")
    assert listed.status_code == 403 and "account page" in listed.json()["detail"]
    assert api.delete(f"/api/v1/tokens/{made[1]['id']}").status_code == 403
    for path in ("/account", "/account/mfa"):
        r = api.get(path, follow_redirects=False)
        assert (r.status_code, r.headers.get("location")) == (303, "/login"), path
    r = api.post("/account/password", data={"current_password": PASSWORD}, follow_redirects=False)
    assert r.status_code in (303, 403), r.text
    with factory() as s:
        doctor = s.scalars(select(User).where(User.username == "doctor")).one()
        assert doctor.mfa_secret is None
        tokens = s.scalars(select(ApiToken).where(ApiToken.user_id == doctor.id)).all()
        assert [t.revoked_at for t in tokens] == [None, None]
    # The owner, signed in, still lists and revokes them.
    assert len(browser.get("/api/v1/tokens").json()) == 2
    assert browser.delete(f"/api/v1/tokens/{made[1]['id']}").status_code == 204


def test_tokens_are_stored_only_as_hashes(app, staff, factory):
    browser = sign_in(app, "coordinator")
    secret = browser.post("/api/v1/tokens", json={"name": "x", "scopes": ["patient:read"]}).json()[
        "token"
    ]
    with factory() as s:
        from regenspine.auth.models import ApiToken

        stored = s.scalars(select(ApiToken)).one()
    assert secret not in (stored.token_hash, stored.prefix)
    assert stored.token_hash == auth.sha256_hex(secret)


@pytest.mark.parametrize("password", ["short-pw-1", "password1234", "qwertyuiop123"])
def test_staff_account_with_a_weak_password_is_refused_and_not_created(
    app, staff, factory, password
):
    admin = sign_in(app, "admin")
    r = admin.post(
        "/api/v1/users",
        json={
            "username": "newnurse",
            "full_name": "New Nurse",
            "role": "nurse",
            "password": password,
        },
    )
    assert r.status_code == 422
    assert "password" in r.json()["errors"]
    with factory() as s:
        assert s.scalar(select(User.id).where(User.username == "newnurse")) is None


def test_disabling_an_account_ends_its_sessions_and_tokens_for_good(app, staff, factory):
    """ASVS 5.0 V6.4.x/V7.4.2: a disabled account's browsers and API tokens end with it, and
    enabling the account again brings back neither: a token handed to an integration while
    the account was in use, or a browser left signed in, does not come back to life."""
    nurse = sign_in(app, "nurse")
    secret = nurse.post("/api/v1/tokens", json={"name": "ward tablet", "scopes": ["patient:read"]})
    assert secret.status_code == 201, secret.text
    api = browser_client(app)
    api.headers["Authorization"] = f"Bearer {secret.json()['token']}"
    assert api.get("/api/v1/patients").status_code == 200
    admin = sign_in(app, "admin")
    nurse_id = staff.users[Role.NURSE].id
    r = admin.patch(f"/api/v1/users/{nurse_id}", json={"is_active": False})
    assert r.status_code == 200 and r.json()["is_active"] is False
    assert nurse.get("/api/v1/me").status_code == 401
    assert api.get("/api/v1/patients").status_code == 401

    enabled = admin.patch(f"/api/v1/users/{nurse_id}", json={"is_active": True})
    assert enabled.status_code == 200 and enabled.json()["is_active"] is True
    assert nurse.get("/api/v1/me").status_code == 401
    assert api.get("/api/v1/patients").status_code == 401
    assert sign_in(app, "nurse").get("/api/v1/me").status_code == 200  # the password still works
    with factory() as s:
        disabled = s.scalars(
            select(AuditRecord).where(AuditRecord.action == "user.update").order_by(AuditRecord.seq)
        ).first()
        assert disabled is not None
        detail = json.loads(disabled.detail)
        assert detail["api_tokens_revoked"] == "1"
        assert detail["sessions_ended"] == "1"


def test_a_totp_code_signs_in_once_only(app, staff, factory):
    """ASVS 5.0 V6.5.1: a time-based code accepted once cannot be replayed within its window,
    not even the code used to turn two-step sign-in on; the next code works."""
    client = sign_in(app, "medical-director")
    totp = _enrolment_totp(client, factory)
    now = time.time()
    enrol_code = totp.at(now)
    assert (
        client.post("/account/mfa", data={"password": PASSWORD, "code": enrol_code}).status_code
        == 200
    )

    first = browser_client(app)
    _login(first, "medical-director", PASSWORD)
    replay = first.post("/login/mfa", data={"code": enrol_code, "csrf_token": _csrf(first)})
    assert replay.status_code == 401
    assert "The code is not correct or has expired" in replay.text
    assert first.get("/api/v1/me").status_code == 401

    next_code = totp.at(now + totp.interval)  # the authenticator's next code (drift window)
    good = first.post(
        "/login/mfa", data={"code": next_code, "csrf_token": _csrf(first)}, follow_redirects=False
    )
    assert good.status_code == 303
    assert first.get("/api/v1/me").status_code == 200

    second = browser_client(app)
    _login(second, "medical-director", PASSWORD)
    again = second.post("/login/mfa", data={"code": next_code, "csrf_token": _csrf(second)})
    assert again.status_code == 401
    with factory() as s:
        refused = s.scalar(
            select(func.count())
            .select_from(AuditRecord)
            .where(AuditRecord.action == "auth.mfa_failed")
        )
    assert refused == 2


def test_a_name_that_matches_no_account_is_not_written_to_the_audit_log(app, staff, factory):
    """ASVS 5.0 V16.2.5 / V14.2.1: people type their password into the username field; a
    sign-in name that matches no account is recorded as a key, never as the text, and the same
    key still counts towards the lock."""
    typed = "Summer-Holiday-2026!"  # a password typed as the user name
    client = browser_client(app)
    for _ in range(6):
        assert _login(client, typed, "whatever-else-was-typed").status_code == 401
    with factory() as s:
        rows = s.scalars(select(AuditRecord).where(AuditRecord.action == "auth.login_failed")).all()
    assert len(rows) == 6
    assert all(typed.lower() not in f"{r.entity_id} {r.detail}".lower() for r in rows)
    assert len({r.entity_id for r in rows}) == 1 and rows[0].entity_id.startswith("unknown:")
    assert json.loads(rows[-1].detail)["reason"] == "locked"  # five failures lock that name too


def test_changing_the_password_signs_out_every_other_browser(app, staff, factory):
    """ASVS 5.0 V7.4.3 and V6.2.3: someone who learnt the old password and signed in with it
    is signed out when the owner changes it; the owner's own browser stays signed in. A wrong
    current password changes nothing."""
    intruder = sign_in(app, "nurse")
    other_device = sign_in(app, "nurse")
    owner = sign_in(app, "nurse")
    colleague = sign_in(app, "coordinator")
    new_password = "a-quiet-lighthouse-by-the-fjord-7"
    intruders_token = _bearer(app, _new_token(intruder))
    colleagues_token = _bearer(app, _new_token(colleague))

    with factory() as s:
        hash_before = s.scalars(select(User.password_hash).where(User.username == "nurse")).one()
    refused = owner.post(
        "/account/password",
        data={"current_password": "not-my-password-123", "new_password": new_password},
    )
    assert refused.status_code == 422
    assert "The current password is not correct." in refused.text
    assert intruder.get("/api/v1/me").status_code == 200
    assert intruders_token.get("/api/v1/me").status_code == 200
    with factory() as s:
        assert s.scalars(select(User.password_hash).where(User.username == "nurse")).one() == (
            hash_before
        )

    changed = owner.post(
        "/account/password", data={"current_password": PASSWORD, "new_password": new_password}
    )
    assert changed.status_code == 200, changed.text
    assert "Your other signed-in browsers were signed out." in changed.text

    assert intruder.get("/api/v1/me").status_code == 401
    assert other_device.get("/api/v1/me").status_code == 401
    assert owner.get("/api/v1/me").status_code == 200
    assert colleague.get("/api/v1/me").status_code == 200  # another user's sessions: untouched
    # An API token made with the old password (by its owner, or by whoever had it) ends too.
    assert intruders_token.get("/api/v1/me").status_code == 401
    assert colleagues_token.get("/api/v1/me").status_code == 200
    assert _login(browser_client(app), "nurse", PASSWORD).status_code == 401
    assert _login(browser_client(app), "nurse", new_password).status_code == 303

    with factory() as s:
        ended = s.scalars(
            select(WebSession.end_reason).where(WebSession.end_reason == "password_changed")
        ).all()
        record = s.scalars(
            select(AuditRecord).where(AuditRecord.action == "auth.password_changed")
        ).one()
    assert len(ended) == 2
    assert json.loads(record.detail) == {"other_sessions_ended": 2, "api_tokens_revoked": 1}


def _new_token(client, scopes: tuple[str, ...] = ("patient:read",), **extra) -> str:
    created = client.post(
        "/api/v1/tokens", json={"name": "integration", "scopes": list(scopes)} | extra
    )
    assert created.status_code == 201, created.text
    return created.json()["token"]


def _token_form_key(client) -> str:
    page = client.get("/account")
    assert page.status_code == 200, page.text
    return page.text.split('name="form_key" value="')[1].split('"')[0]


def test_a_token_form_sent_again_makes_no_second_token(app, staff, factory):
    """The page shows a new token's secret in its answer to the form, so a reload of that
    answer sends the form again. The form's one-time key finds the token it made: the second
    copy is refused with the token's name and no second token exists. A form without a valid
    key is refused with a reload hint, and a fresh page's key makes a new token."""
    browser = sign_in(app, "coordinator")
    form = {"name": "lab results", "scopes": "patient:read", "days_valid": "30"}
    key = _token_form_key(browser)
    first = browser.post("/account/tokens", data=form | {"form_key": key})
    assert first.status_code == 200, first.text
    secret = re.search(r"(rst_[A-Za-z0-9_-]{43})", first.text)
    assert secret is not None
    assert "Copy it now" in first.text

    again = browser.post("/account/tokens", data=form | {"form_key": key})
    assert again.status_code == 409, again.text
    assert "This form was already sent and made the token “lab results”." in again.text
    assert "rst_" not in again.text.split("<table")[0]  # the secret is not shown again
    with factory() as s:
        assert s.scalar(select(func.count(ApiToken.id))) == 1
    assert _bearer(app, secret.group(1)).get("/api/v1/me").status_code == 200

    for stale in ("", "short", "x" * 44, "<script>alert(1)</script>aaaaaaaa"):
        refused = browser.post("/account/tokens", data=form | {"form_key": stale})
        assert refused.status_code == 422, (stale, refused.text)
        assert "This form is out of date. Reload the page and try again" in refused.text
    with factory() as s:
        assert s.scalar(select(func.count(ApiToken.id))) == 1

    second = browser.post("/account/tokens", data=form | {"form_key": _token_form_key(browser)})
    assert second.status_code == 200, second.text
    # Another account's form key is its own: the same key makes that account's token.
    other = sign_in(app, "doctor")
    theirs = other.post("/account/tokens", data=form | {"form_key": key})
    assert theirs.status_code == 200, theirs.text
    with factory() as s:
        owners = s.execute(select(User.username, ApiToken.name).join(User)).all()
    assert sorted(owners) == [
        ("coordinator", "lab results"),
        ("coordinator", "lab results"),
        ("doctor", "lab results"),
    ]


def test_a_token_form_sent_twice_at_once_makes_one_token(app, staff, factory):
    """A double click sends the form twice at once. The first copy's token is not yet committed
    when the second looks for it; the unique (account, form key) index then refuses the second
    insert, and the second copy is answered as a form already sent. Each of two sessions holds
    its transaction open across the other's attempt, so the race is not left to timing."""
    coordinator = staff.actor(Role.COORDINATOR)
    key = auth.new_form_key()
    first, second = factory(), factory()
    try:
        auth.create_api_token(first, coordinator, "twice", ["patient:read"], 30, key)
        outcome: list[object] = []

        def send_again() -> None:
            try:
                auth.create_api_token(second, coordinator, "twice", ["patient:read"], 30, key)
                second.commit()
                outcome.append("made")
            except auth.FormAlreadySent as exc:
                second.rollback()
                outcome.append(exc.message.render())

        racer = threading.Thread(target=send_again)
        racer.start()
        racer.join(0.5)  # PostgreSQL: waiting on the index; SQLite: waiting for the write lock
        first.commit()
        racer.join(30)
        assert not racer.is_alive()
    finally:
        first.close()
        second.close()
    assert outcome == [
        "This form was already sent and made the token “twice”. Its secret was shown only once "
        "and is not kept: if you did not copy it, revoke that token and create a new one."
    ]
    with factory() as s:
        assert s.scalar(select(func.count(ApiToken.id))) == 1


def _bearer(app, secret: str):
    api = browser_client(app)
    api.headers["Authorization"] = f"Bearer {secret}"
    return api


FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
)
CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
EDGE_WINDOWS = CHROME_LINUX.replace("X11; Linux x86_64", "Windows NT 10.0") + " Edg/131.0.0.0"


def _signed_in_with(app, username: str, user_agent: str):
    client = browser_client(app)
    client.headers["user-agent"] = user_agent
    return sign_in_client(client, username)


def _radio_values(page: str) -> list[str]:
    return [part.split('"')[0] for part in page.split('type="radio" name="session" value="')[1:]]


def _ref_of(client) -> str:
    return auth.session_ref(auth.sha256_hex(client.cookies["rs_session"]))


def test_a_user_sees_their_browsers_and_signs_out_one_or_all_others_with_their_password(
    app, staff, factory
):
    """ASVS 5.0 V7.5.2: a user sees every browser signed in as them and, after giving their
    password again, signs out one of them or all the others. Their own browser, and other
    users' browsers, are never touched; a refusal changes nothing."""
    laptop = _signed_in_with(app, "nurse", FIREFOX_WINDOWS)
    phone = _signed_in_with(app, "nurse", SAFARI_IPHONE)
    owner = _signed_in_with(app, "nurse", CHROME_LINUX)
    colleague = _signed_in_with(app, "coordinator", EDGE_WINDOWS)

    page = owner.get("/account")
    assert page.status_code == 200
    listed = page.text.split('id="browsers"')[1].split("</section>")[0]
    for name in ("Firefox on Windows", "Safari on iPhone", "Chrome on Linux"):
        assert name in listed
    assert "Edge on Windows" not in listed  # a colleague's browser is not theirs to see
    assert listed.count("This browser") == 1
    # Only the other browsers can be chosen, and "all other browsers" is the default.
    assert sorted(_radio_values(listed)) == sorted(["others", _ref_of(laptop), _ref_of(phone)])

    def still_signed_in() -> list[int]:
        return [c.get("/api/v1/me").status_code for c in (laptop, phone, owner, colleague)]

    refusals = [
        ({"session": "others", "password": "not-my-password-123"}, "password is not correct"),
        ({"session": _ref_of(colleague), "password": PASSWORD}, "no longer signed in"),
        ({"session": "0123456789abcdef", "password": PASSWORD}, "no longer signed in"),
        ({"session": _ref_of(owner), "password": PASSWORD}, "the browser you are using"),
    ]
    for form, message in refusals:
        refused = owner.post("/account/sessions", data=form)
        assert refused.status_code == 422, form
        assert message in refused.text
        assert still_signed_in() == [200, 200, 200, 200]

    one = owner.post("/account/sessions", data={"session": _ref_of(laptop), "password": PASSWORD})
    assert one.status_code == 200, one.text
    assert "1 browser was signed out." in one.text
    assert still_signed_in() == [401, 200, 200, 200]

    rest = owner.post("/account/sessions", data={"session": "others", "password": PASSWORD})
    assert rest.status_code == 200, rest.text
    assert "1 browser was signed out." in rest.text
    assert "No other browser is signed in as you." in rest.text
    assert still_signed_in() == [401, 401, 200, 200]

    with factory() as s:
        reasons = s.scalars(
            select(WebSession.end_reason).where(WebSession.end_reason.is_not(None))
        ).all()
        records = s.scalars(
            select(AuditRecord)
            .where(AuditRecord.action == "auth.sessions_signed_out")
            .order_by(AuditRecord.id)
        ).all()
    assert reasons == ["signed_out_by_user", "signed_out_by_user"]
    assert [json.loads(r.detail) for r in records] == [
        {"which": "one", "ended": 1},
        {"which": "all_others", "ended": 1},
    ]
    assert {r.actor_username for r in records} == {"nurse"}


def test_turning_on_two_step_sign_in_signs_out_every_other_browser(app, staff, factory):
    """ASVS 5.0 V7.4.3: a session opened with a stolen password before two-step sign-in was
    turned on does not outlive the change."""
    intruder = sign_in(app, "medical-director")
    intruders_token = _bearer(app, _new_token(intruder, ("audit:read",)))
    owner = sign_in(app, "medical-director")
    totp = _enrolment_totp(owner, factory)
    turned_on = owner.post("/account/mfa", data={"password": PASSWORD, "code": totp.now()})
    assert turned_on.status_code == 200, turned_on.text
    assert "Your other signed-in browsers were signed out." in turned_on.text
    assert intruder.get("/api/v1/me").status_code == 401
    assert intruders_token.get("/api/v1/me").status_code == 401
    assert owner.get("/api/v1/me").status_code == 200
    with factory() as s:
        record = s.scalars(
            select(AuditRecord).where(AuditRecord.action == "auth.mfa_enabled")
        ).one()
    assert json.loads(record.detail) == {"other_sessions_ended": 1, "api_tokens_revoked": 1}


def test_wrong_second_step_codes_lock_two_step_sign_in_even_after_the_right_password(
    app, staff, factory, monkeypatch
):
    """ASVS 5.0 V6.3.1: someone who knows the password cannot guess codes without end. Five
    wrong codes lock the second step for the throttling window: even the right code is then
    refused, signing in with the password again does not reset the count, and after the
    window the right code works."""
    owner = sign_in(app, "medical-director")
    totp = _enrolment_totp(owner, factory)
    start = time.time()
    assert (
        owner.post("/account/mfa", data={"password": PASSWORD, "code": totp.at(start)}).status_code
        == 200
    )

    guesser = browser_client(app)
    _login(guesser, "medical-director", PASSWORD)
    for guess in ("000000", "111111", "222222", "333333", "444444"):
        wrong = guesser.post("/login/mfa", data={"code": guess, "csrf_token": _csrf(guesser)})
        assert wrong.status_code == 401
        assert "The code is not correct" in wrong.text
    right = totp.at(start + totp.interval)
    locked = guesser.post("/login/mfa", data={"code": right, "csrf_token": _csrf(guesser)})
    assert locked.status_code == 401
    assert "Too many wrong codes" in locked.text and "15 minutes" in locked.text
    assert guesser.get("/api/v1/me").status_code == 401

    again = browser_client(app)  # the password is right, but it does not reset the count
    assert _login(again, "medical-director", PASSWORD).headers["location"].startswith("/login/mfa")
    still = again.post("/login/mfa", data={"code": right, "csrf_token": _csrf(again)})
    assert "Too many wrong codes" in still.text
    assert again.get("/api/v1/me").status_code == 401

    later = utcnow() + timedelta(minutes=16)
    monkeypatch.setattr(auth, "utcnow", lambda: later)
    after = browser_client(app)
    _login(after, "medical-director", PASSWORD)
    code_then = totp.at(later)
    passed = after.post(
        "/login/mfa", data={"code": code_then, "csrf_token": _csrf(after)}, follow_redirects=False
    )
    assert passed.status_code == 303, passed.text
    assert after.get("/api/v1/me").status_code == 200
    with factory() as s:
        actions = s.scalars(
            select(AuditRecord.action).where(AuditRecord.action.like("auth.mfa_%"))
        ).all()
    assert actions.count("auth.mfa_failed") == 5
    assert actions.count("auth.mfa_locked") == 2


def test_every_api_token_expires_within_a_year(app, staff, factory, monkeypatch):
    """ASVS 5.0 V7.1.1 / V7.3.2: a token for a forgotten integration does not work for ever.
    A token without an expiry, or with more than 366 days, is refused and none is made; the
    default is 90 days; an expired token is refused and shown as expired."""
    browser = sign_in(app, "coordinator")
    for days, field in ((None, "days_valid"), (0, "days_valid"), (367, "days_valid")):
        refused = browser.post(
            "/api/v1/tokens", json={"name": "lab", "scopes": ["patient:read"], "days_valid": days}
        )
        assert refused.status_code == 422, (days, refused.text)
        assert field in refused.text
    page_refused = browser.post(
        "/account/tokens",
        data={
            "name": "lab",
            "scopes": "patient:read",
            "days_valid": "400",
            "form_key": _token_form_key(browser),
        },
    )
    assert page_refused.status_code == 422
    assert "A token is valid for 1 to 366 days." in page_refused.text
    with factory() as s:
        assert s.scalar(select(func.count(ApiToken.id))) == 0

    secret = _new_token(browser)
    year = _new_token(browser, days_valid=366)
    with factory() as s:
        made = {t.prefix: t for t in s.scalars(select(ApiToken))}
    default, longest = made[secret[:10]], made[year[:10]]
    assert default.expires_at - default.created_at == timedelta(days=90)
    assert longest.expires_at - longest.created_at == timedelta(days=366)

    page_made = browser.post(
        "/account/tokens",
        data={
            "name": "week",
            "scopes": "patient:read",
            "days_valid": "7",
            "form_key": _token_form_key(browser),
        },
    )
    assert page_made.status_code == 200, page_made.text
    with factory() as s:
        week = s.scalars(select(ApiToken).where(ApiToken.name == "week")).one()
    assert week.expires_at - week.created_at == timedelta(days=7)

    api = _bearer(app, secret)
    assert api.get("/api/v1/me").status_code == 200
    later = utcnow() + timedelta(days=90, seconds=1)
    monkeypatch.setattr(auth, "utcnow", lambda: later)
    assert api.get("/api/v1/me").status_code == 401
    assert _bearer(app, year).get("/api/v1/me").status_code == 200


def test_wrong_passwords_on_re_authentication_forms_count_towards_the_sign_in_lock(
    app, staff, factory
):
    """ASVS 5.0 V6.3.1: a taken-over browser is not a way to guess the password. Wrong
    passwords on the forms that ask for it again (password change, signing out browsers,
    turning on two-step sign-in) count like wrong ones on the sign-in page: after five the
    account is locked, the right password is refused on the sign-in page and on the forms,
    and nothing changes. The browser whose wrong password locked the account is signed out,
    and so is any browser that asks for a change while it is locked; a browser that asks
    nothing stays signed in."""
    owner = sign_in(app, "nurse")
    other = sign_in(app, "nurse")
    idle = sign_in(app, "nurse")
    with factory() as s:
        hash_before = s.scalars(select(User.password_hash).where(User.username == "nurse")).one()
    new_password = "a-quiet-lighthouse-by-the-fjord-7"
    attempts = [
        ("/account/password", {"current_password": "guess-1-not-it", "new_password": new_password}),
        ("/account/sessions", {"password": "guess-2-not-it", "session": "others"}),
        ("/account/password", {"current_password": "guess-3-not-it", "new_password": new_password}),
        ("/account/sessions", {"password": "guess-4-not-it", "session": "others"}),
    ]
    for path, data in attempts:
        wrong = owner.post(path, data=data)
        assert wrong.status_code == 422, wrong.text
        assert "The current password is not correct." in wrong.text
    assert owner.get("/api/v1/me").status_code == 200
    fifth = owner.post(
        "/account/password",
        data={"current_password": "guess-5-not-it", "new_password": new_password},
    )
    assert fifth.status_code == 422, fifth.text
    assert "Too many wrong passwords: this browser has been signed out." in fifth.text
    assert owner.get("/api/v1/me").status_code == 401

    assert _login(browser_client(app), "nurse", PASSWORD).status_code == 401
    locked = other.post(
        "/account/password", data={"current_password": PASSWORD, "new_password": new_password}
    )
    assert locked.status_code == 422
    assert "Too many wrong passwords: this browser has been signed out." in locked.text
    assert other.get("/api/v1/me").status_code == 401
    assert idle.get("/api/v1/me").status_code == 200  # it asked for nothing
    with factory() as s:
        assert s.scalars(select(User.password_hash).where(User.username == "nurse")).one() == (
            hash_before
        )
        reasons = [
            json.loads(r.detail)["reason"]
            for r in s.scalars(
                select(AuditRecord)
                .where(AuditRecord.action == "auth.login_failed")
                .order_by(AuditRecord.seq)
            )
        ]
        ended = s.scalars(
            select(WebSession.end_reason).where(WebSession.ended_at.is_not(None))
        ).all()
    assert reasons == ["wrong_password_again"] * 5 + ["locked", "locked"]
    assert ended == ["locked_out", "locked_out"]


def test_an_administrator_turns_off_a_lost_authenticator_with_a_reason_and_it_is_audited(
    app, staff, factory
):
    """ASVS 5.0 V6.4.3 / V7.4.5: when someone loses their phone (or their account may be
    taken over), an administrator turns off their two-step sign-in: every session of theirs
    ends, every API token is revoked, the old recovery codes stop working, and the audit log
    says who did it and why. Refused with nothing changed: no reason, the administrator's
    own account, and an account without two-step sign-in."""
    director = sign_in(app, "medical-director")
    totp = _enrolment_totp(director, factory)
    enrolled = director.post("/account/mfa", data={"password": PASSWORD, "code": totp.now()})
    codes = _recovery_codes(enrolled.text)
    token = _bearer(app, _new_token(director, ("audit:read",)))
    with factory() as s:
        director_id = s.scalars(select(User.id).where(User.username == "medical-director")).one()
        admin_id = s.scalars(select(User.id).where(User.username == "admin")).one()
        nurse_id = s.scalars(select(User.id).where(User.username == "nurse")).one()

    admin = sign_in(app, "admin")
    reason = "Lost phone; identity checked in person with her staff card."
    short = admin.post(
        f"/admin/users/{director_id}/credentials", data={"what": "two_step", "reason": "lost"}
    )
    assert short.status_code == 422 and "10 to 500 characters" in short.text
    own = admin.post(
        f"/admin/users/{admin_id}/credentials", data={"what": "two_step", "reason": reason}
    )
    assert own.status_code == 409 and "another administrator must do it" in own.text
    off_already = admin.post(
        f"/api/v1/users/{nurse_id}/credential-resets", json={"what": "two_step", "reason": reason}
    )
    assert off_already.status_code == 409
    assert director.get("/api/v1/me").status_code == 200
    assert token.get("/api/v1/me").status_code == 200

    page = admin.get("/admin/users")
    assert f'action="/admin/users/{director_id}/credentials"' in page.text
    done = admin.post(
        f"/admin/users/{director_id}/credentials", data={"what": "two_step", "reason": reason}
    )
    assert done.status_code == 200, done.text
    assert "Browsers signed out: 1. API tokens revoked: 1." in done.text
    assert "Two-step sign-in is off for this account" in done.text
    assert director.get("/api/v1/me").status_code == 401
    assert token.get("/api/v1/me").status_code == 401

    fresh = browser_client(app)  # the password alone now signs in; no code is asked
    assert _login(fresh, "medical-director", PASSWORD).headers["location"] == "/patients"
    assert fresh.get("/api/v1/me").status_code == 200
    with factory() as s:
        user = s.get(User, director_id)
        assert user.mfa_enabled is False and user.mfa_secret is None
        assert s.scalar(select(func.count(RecoveryCode.id))) == 0
        records = s.scalars(
            select(AuditRecord).where(AuditRecord.action.like("user.reset_%"))
        ).all()
    assert codes and all(len(c) == 29 for c in codes)
    assert [(r.action, r.actor_username, r.entity_id, r.outcome) for r in records] == [
        ("user.reset_two_step", "admin", "medical-director", "success")
    ]
    assert json.loads(records[0].detail) == {
        "reason": reason,
        "sessions_ended": 1,
        "api_tokens_revoked": 1,
    }

    # Revoking tokens alone leaves the person signed in.
    nurse = sign_in(app, "nurse")
    nurse_token = _bearer(app, _new_token(nurse))
    revoked = admin.post(
        f"/api/v1/users/{nurse_id}/credential-resets",
        json={"what": "api_tokens", "reason": "Token was pasted into a public chat."},
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["api_tokens_revoked"] == 1 and revoked.json()["sessions_ended"] == 0
    assert nurse_token.get("/api/v1/me").status_code == 401
    assert nurse.get("/api/v1/me").status_code == 200
    assert (
        sign_in(app, "nurse")
        .post(
            f"/api/v1/users/{director_id}/credential-resets",
            json={"what": "api_tokens", "reason": "Token was pasted into a public chat."},
        )
        .status_code
        == 403
    )


def _try_sign_in(app, username: str, password: str):
    client = browser_client(app)
    return client, _login(client, username, password)


def test_a_forgotten_password_is_reset_with_a_one_time_password_that_only_lets_its_holder_choose_a_new_one(  # noqa: E501
    app, staff, factory, monkeypatch
):
    """ASVS 5.0 V6.4.1, V6.4.3: an administrator sets a one-time password, given once, with
    a reason. It ends the person's browsers and tokens, works for 72 hours, and only to choose
    their own password (not the same one): until then every page leads to *My account* and
    the API refuses. The reset keeps two-step sign-in: it is not a way round the second step.
    Neither the audit log nor the notice e-mail holds the one-time password."""
    nurse = staff.users[Role.NURSE].id
    with unit_of_work(factory) as s:
        s.execute(update(User).where(User.id == nurse).values(email="nurse@clinic.example"))
    before = sign_in(app, "nurse")
    token = _new_token(before)
    admin = sign_in(app, "admin")
    short = admin.post(
        f"/api/v1/users/{nurse}/credential-resets", json={"what": "password", "reason": "forgot"}
    )
    assert short.status_code == 422
    reason = "Forgot her password; identity checked at the front desk."
    done = admin.post(
        f"/api/v1/users/{nurse}/credential-resets", json={"what": "password", "reason": reason}
    )
    assert done.status_code == 200, done.text
    answer = done.json()
    one_time = answer["one_time_password"]
    assert re.fullmatch(r"([a-z2-7]{4}-){4}[a-z2-7]{4}", one_time)
    assert (answer["sessions_ended"], answer["api_tokens_revoked"]) == (1, 1)
    assert before.get("/api/v1/me").status_code == 401
    assert _bearer(app, token).get("/api/v1/me").status_code == 401
    assert _try_sign_in(app, "nurse", PASSWORD)[1].status_code == 401

    holder, signed_in = _try_sign_in(app, "nurse", one_time)
    assert signed_in.status_code == 303
    assert holder.get("/patients", follow_redirects=False).headers["location"] == "/account"
    page = holder.get("/account")
    assert "You signed in with a one-time password: choose your own password first." in page.text
    holder.headers["X-CSRF-Token"] = holder.get("/api/v1/me").json()["csrf_token"]
    refused = holder.get("/api/v1/patients")
    assert refused.status_code == 403
    assert "choose your own password first" in refused.json()["detail"]
    no_token = holder.post(
        "/account/tokens",
        data={"name": "x", "scopes": "patient:read", "days_valid": "9",
              "form_key": auth.new_form_key()},
    )  # fmt: skip
    assert no_token.status_code == 403 and "Choose your own password first." in no_token.text
    same = holder.post(
        "/account/password", data={"current_password": one_time, "new_password": one_time}
    )
    assert same.status_code == 422
    assert "Choose a new password, not the current one." in same.text
    own = holder.post(
        "/account/password", data={"current_password": one_time, "new_password": NEW_PASSWORD}
    )
    assert own.status_code == 200, own.text
    assert holder.get("/patients").status_code == 200
    with factory() as s:
        user = s.get(User, nurse)
        assert (user.password_must_change, user.password_expires_at) == (False, None)
        record = s.scalars(select(AuditRecord).where(AuditRecord.action == "user.reset_password"))
        [reset] = record.all()
        mails = s.scalars(select(OutboxMessage.body)).all()
    assert json.loads(reset.detail)["reason"] == reason and one_time not in reset.detail
    assert any("reset the password" in m for m in mails)
    assert not any(one_time in m for m in mails)

    # After 72 hours the one-time password no longer signs in, and says so.
    doctor = staff.users[Role.DOCTOR].id
    expired = admin.post(
        f"/api/v1/users/{doctor}/credential-resets", json={"what": "password", "reason": reason}
    ).json()["one_time_password"]
    later = utcnow() + timedelta(hours=72, seconds=1)
    monkeypatch.setattr(auth, "utcnow", lambda: later)
    _, too_late = _try_sign_in(app, "doctor", expired)
    assert too_late.status_code == 401
    assert "This one-time password has expired (they work for 72 hours)." in too_late.text
    monkeypatch.undo()

    # With two-step sign-in on, the one-time password still needs the second step.
    director = staff.users[Role.MEDICAL_DIRECTOR].id
    with unit_of_work(factory) as s:
        s.execute(
            update(User)
            .where(User.id == director)
            .values(mfa_enabled=True, mfa_secret=pyotp.random_base32())
        )
    kept = admin.post(
        f"/api/v1/users/{director}/credential-resets", json={"what": "password", "reason": reason}
    ).json()["one_time_password"]
    _, half = _try_sign_in(app, "medical-director", kept)
    assert half.headers["location"].startswith("/login/mfa")
    with factory() as s:
        assert s.get(User, director).mfa_enabled


def test_an_administrator_signs_out_every_browser_of_a_colleague_and_leaves_their_tokens(
    app, staff, factory
):
    """ASVS 5.0 V7.4.5: every browser of the account is signed out, with a reason in the
    audit log; its API tokens keep working (they have their own reset)."""
    nurse = staff.users[Role.NURSE].id
    first, second = sign_in(app, "nurse"), sign_in(app, "nurse")
    token = _new_token(first)
    admin = sign_in(app, "admin")
    done = admin.post(
        f"/api/v1/users/{nurse}/credential-resets",
        json={"what": "sessions", "reason": "Laptop left unlocked in the physio room."},
    )
    assert done.status_code == 200, done.text
    assert (done.json()["sessions_ended"], done.json()["api_tokens_revoked"]) == (2, 0)
    assert done.json()["one_time_password"] is None
    for browser in (first, second):
        page = browser.get("/patients", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        _assert_browser_told_to_forget_the_session(page)
        assert browser.get("/api/v1/me").status_code == 401
    assert _bearer(app, token).get("/api/v1/me").status_code == 200
    assert admin.get("/api/v1/me").status_code == 200
    assert _try_sign_in(app, "nurse", PASSWORD)[1].status_code == 303  # the password still works


def test_an_account_an_administrator_creates_chooses_its_own_password_at_first_sign_in(
    app, staff, factory
):
    """ASVS 5.0 V6.4.1: the administrator knows the first password, so it is temporary: it
    works for 72 hours and only to choose the person's own."""
    admin = sign_in(app, "admin")
    made = admin.post(
        "/api/v1/users",
        json={"username": "newnurse", "full_name": "New Nurse", "role": "nurse",
              "password": "first-password-from-admin-9"},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    with factory() as s:
        user = s.scalars(select(User).where(User.username == "newnurse")).one()
        assert user.password_must_change
        assert user.password_expires_at - user.created_at == timedelta(hours=72)
    person = sign_in(app, "newnurse", "first-password-from-admin-9")
    assert person.get("/patients", follow_redirects=False).headers["location"] == "/account"
    assert person.get("/api/v1/patients").status_code == 403
    changed = person.post(
        "/account/password",
        data={"current_password": "first-password-from-admin-9", "new_password": NEW_PASSWORD},
    )
    assert changed.status_code == 200, changed.text
    assert person.get("/api/v1/patients").status_code == 200


def test_refused_api_tokens_and_forms_are_logged_with_a_reason_and_never_the_secret(
    app, staff, caplog
):
    """ASVS 5.0 V16.3.1, V16.3.3: a token that does not sign in (unknown, revoked, not a token
    at all) and a form without its CSRF token are logged as warnings, with the reason, the
    account and the address, and only the token's visible prefix. Anyone can send these as
    fast as they like, so they go to the application log, not one audit record each."""
    caplog.set_level(logging.WARNING, logger="regenspine.security")
    browser = sign_in(app, "coordinator")
    secret = _new_token(browser)
    [made] = browser.get("/api/v1/tokens").json()
    assert browser.delete(f"/api/v1/tokens/{made['id']}").status_code in (200, 204)
    unknown = "rst_" + "Q" * 43
    assert _bearer(app, unknown).get("/api/v1/me").status_code == 401
    assert _bearer(app, secret).get("/api/v1/patients?q=a").status_code == 401  # read-only path
    assert _bearer(app, "not-a-token").get("/api/v1/me").status_code == 401
    nurse = sign_in(app, "nurse")
    del nurse.headers["X-CSRF-Token"]
    forged = nurse.post(
        "/account/password", data={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert forged.status_code == 403

    logged = [r.getMessage() for r in caplog.records if r.name == "regenspine.security"]
    assert f"API token refused: reason=unknown prefix={unknown[:10]} user=- ip=testclient" in logged
    assert (
        f"API token refused: reason=revoked prefix={secret[:10]} user=coordinator ip=testclient"
        in logged
    )
    assert (
        "API token refused: reason=unknown prefix=(not a token, 11 characters) user=- "
        "ip=testclient" in logged
    )
    assert "Form refused, CSRF token missing: POST /account/password user=nurse ip=testclient" in (
        logged
    )
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name.endswith("security"))
    for message in logged:
        assert secret not in message and unknown not in message and "not-a-token" not in message


def test_a_clinic_adds_its_own_name_and_town_to_the_words_a_password_must_not_be_built_on(
    app, staff, monkeypatch
):
    """ASVS 5.0 V6.2.11: besides the built-in list (auth/rules.py, CONTEXT_WORDS), the words
    in REGENSPINE_PASSWORD_CONTEXT_WORDS: an administrator's new account, a password change
    and the live strength check on My account all refuse a password built on them."""
    from regenspine.config import get_settings

    admin = sign_in(app, "admin")
    built_on_town = "Orlowo-Gdynia-2026!"
    monkeypatch.setenv("REGENSPINE_PASSWORD_CONTEXT_WORDS", "Przychodnia Orłowo, Gdynia")
    get_settings.cache_clear()
    try:
        made = admin.post(
            "/api/v1/users",
            json={"username": "townnurse", "full_name": "Town Nurse", "role": "nurse",
                  "password": built_on_town},
        )  # fmt: skip
        assert made.status_code == 422, made.text
        assert 'built on \\"orlowo\\"' in made.text
        strength = admin.post("/account/password-strength", data={"new_password": built_on_town})
        assert "built on &#34;orlowo&#34;" in strength.text, strength.text
        changed = admin.post(
            "/account/password",
            data={"current_password": PASSWORD, "new_password": "Klinika-Gdynia-2026"},
        )
        assert changed.status_code == 422
        assert "a word anyone would try here" in changed.text
    finally:
        monkeypatch.delenv("REGENSPINE_PASSWORD_CONTEXT_WORDS")
        get_settings.cache_clear()
    made = admin.post(
        "/api/v1/users",
        json={"username": "townnurse", "full_name": "Town Nurse", "role": "nurse",
              "password": built_on_town},
    )  # fmt: skip
    assert made.status_code == 201, made.text  # the town alone was what refused it
