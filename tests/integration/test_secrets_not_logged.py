"""Secrets never reach a log or the audit log: a real uvicorn server with its access log, every
logger at DEBUG, and one staff member who signs in (wrongly, then rightly), turns on two-step
sign-in, signs in with a recovery code, creates and uses an API token and changes the password."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, quote_plus

import httpx
import pyotp
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from regenspine.audit.models import AuditRecord
from regenspine.auth import service as auth
from regenspine.auth.models import User
from regenspine.auth.permissions import Permission, Role
from regenspine.db import get_engine, unit_of_work
from regenspine.patients import service as patients
from regenspine.web.security import ANON_CSRF_COOKIE, SESSION_COOKIE
from tests.conftest import PASSWORD, serve_in_thread, valid_patient

WRONG_PASSWORD = "wrong-horse-battery-staple-17"
NEW_PASSWORD = "quiet-lantern-orchard-copper-58"
# SQLAlchemy's DEBUG level prints every row it reads: a dump of the database itself (patients
# included), which only an operator who turns on the "sqlalchemy.engine" logger ever sees.
# Everything else at DEBUG, and all SQL with its bound values, must be free of secrets.
ROW_DUMP = "Row %r"
# This test's own HTTP client logs the headers it receives; it is not part of the product.
TEST_CLIENT_LOGGERS = ("httpx", "httpcore")


@contextmanager
def running(app) -> Iterator[str]:
    """The app behind a real uvicorn on a free loopback port, access log on, as in `serve`."""
    with serve_in_thread(app, log_config=None, log_level="debug", access_log=True) as base_url:
        yield base_url


@pytest.fixture
def every_logger_at_debug(caplog) -> Iterator[pytest.LogCaptureFixture]:
    """Every logger at DEBUG, uvicorn's own (which need not propagate) included."""
    names = ["", "uvicorn", "uvicorn.error", "uvicorn.access", "sqlalchemy", "sqlalchemy.engine"]
    for name in dict.fromkeys([*names, *logging.root.manager.loggerDict]):
        caplog.set_level(logging.DEBUG, logger=name)
    direct = [logging.getLogger("uvicorn"), logging.getLogger("uvicorn.access")]
    for logger in direct:
        logger.addHandler(caplog.handler)
    yield caplog
    for logger in direct:
        logger.removeHandler(caplog.handler)


def _log_text(record: logging.LogRecord) -> str:
    parts = [record.getMessage(), repr(record.args), repr(record.__dict__.get("extra", ""))]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append(repr(record.exc_info[1]))
        parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


def _sign_in(client: httpx.Client, password: str) -> httpx.Response:
    client.get("/login")
    return client.post(
        "/login",
        data={
            "username": "doctor",
            "password": password,
            "csrf_token": client.cookies[ANON_CSRF_COOKIE],
        },
    )


def _session_csrf(client: httpx.Client) -> str:
    me = client.get("/api/v1/me")
    assert me.status_code == 200, me.text
    return me.json()["csrf_token"]


def test_passwords_codes_tokens_and_cookies_appear_in_no_log_and_no_audit_record(
    app, staff, factory, every_logger_at_debug
):
    """ASVS 5.0 V16.2.5 (no credentials or session tokens in logs), V14.2.1 (sensitive data not
    sent in URLs), V7.2.x, V6.5.x."""
    secrets: dict[str, str] = {"password": PASSWORD, "wrong password": WRONG_PASSWORD}
    with running(app) as base_url, httpx.Client(base_url=base_url) as client:
        refused = _sign_in(client, WRONG_PASSWORD)
        assert refused.status_code == 401
        secrets["anonymous CSRF token"] = client.cookies[ANON_CSRF_COOKIE]
        signed_in = _sign_in(client, PASSWORD)
        assert signed_in.status_code == 303, signed_in.text
        secrets["first session cookie"] = client.cookies[SESSION_COOKIE]
        csrf = secrets["first CSRF token"] = _session_csrf(client)

        assert client.get("/account/mfa").status_code == 200
        with factory() as s:
            mfa_secret = s.scalar(select(User.mfa_secret).where(User.username == "doctor"))
        assert mfa_secret
        secrets["TOTP secret"] = mfa_secret
        enrolled = client.post(
            "/account/mfa",
            data={"password": PASSWORD, "code": pyotp.TOTP(mfa_secret).now()},
            headers={"X-CSRF-Token": csrf},
        )
        assert enrolled.status_code == 200, enrolled.text
        codes = re.findall(r"<li>([a-z2-7]{4}(?:-[a-z2-7]{4}){5})</li>", enrolled.text)
        assert len(codes) == 10
        secrets |= {f"recovery code {i}": code for i, code in enumerate(codes)}

        assert client.post("/logout", headers={"X-CSRF-Token": csrf}).status_code == 303
        assert _sign_in(client, PASSWORD).headers["location"].startswith("/login/mfa")
        secrets["session cookie before the second step"] = client.cookies[SESSION_COOKIE]
        mfa_form = client.get("/login/mfa").text
        pre_mfa_csrf = re.search(r'name="csrf_token" value="([^"]+)"', mfa_form).group(1)
        secrets["CSRF token before the second step"] = pre_mfa_csrf
        wrong_code = client.post(
            "/login/mfa", data={"code": "zz-not-a-code"}, headers={"X-CSRF-Token": pre_mfa_csrf}
        )
        assert wrong_code.status_code == 401
        passed = client.post(
            "/login/mfa", data={"code": codes[3]}, headers={"X-CSRF-Token": pre_mfa_csrf}
        )
        assert passed.status_code == 303, passed.text
        secrets["session cookie after the second step"] = client.cookies[SESSION_COOKIE]
        csrf = secrets["CSRF token after the second step"] = _session_csrf(client)

        created = client.post(
            "/api/v1/tokens",
            json={"name": "lab integration", "scopes": ["patient:read"]},
            headers={"X-CSRF-Token": csrf},
        )
        assert created.status_code == 201, created.text
        token = secrets["API token"] = created.json()["token"]
        with httpx.Client(base_url=base_url) as integration:
            used = integration.get("/api/v1/patients", headers={"Authorization": f"Bearer {token}"})
            assert used.status_code == 200, used.text

        changed = client.post(
            "/account/password",
            data={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers={"X-CSRF-Token": csrf},
        )
        assert changed.status_code == 200 and "Your password was changed." in changed.text
        secrets["new password"] = NEW_PASSWORD

    records = [
        r
        for r in every_logger_at_debug.records
        if r.msg != ROW_DUMP and not r.name.startswith(TEST_CLIENT_LOGGERS)
    ]
    logged = "\n".join(_log_text(r) for r in records)
    # The capture really saw the traffic: the access log, SQL and the sign-in steps.
    assert '"POST /login HTTP/1.1" 401' in logged
    assert '"POST /api/v1/tokens HTTP/1.1" 201' in logged
    assert "INSERT INTO api_tokens" in logged
    with factory() as s:
        audit_rows = s.scalars(select(AuditRecord)).all()
        audited = "\n".join(
            repr(getattr(row, column.key))
            for row in audit_rows
            for column in AuditRecord.__table__.columns
        )
    actions = {row.action for row in audit_rows}
    assert {"auth.login_failed", "auth.mfa_failed", "api_token.create"} <= actions
    assert {"auth.mfa_enabled", "auth.mfa_passed", "auth.password_changed"} <= actions
    leaked_to_logs = [name for name, value in secrets.items() if value in logged]
    leaked_to_audit = [name for name, value in secrets.items() if value in audited]
    assert leaked_to_logs == [], leaked_to_logs
    assert leaked_to_audit == [], leaked_to_audit


def test_a_database_error_message_does_not_carry_the_values_sent_with_it(database_url):
    """ASVS 5.0 V16.2.5: the 500 handler logs the exception; a failed statement's message
    must not repeat its bound values (a PESEL, a TOTP secret, a token)."""
    secret = "JBSWY3DPEHPK3PXP-not-to-be-logged"
    with get_engine(database_url).connect() as conn, pytest.raises(DBAPIError) as failed:
        conn.execute(text("INSERT INTO no_such_table (value) VALUES (:value)"), {"value": secret})
    logged = logging.Formatter().formatException(
        (failed.type, failed.value, failed.value.__traceback__)
    )
    assert "no_such_table" in logged
    assert secret not in logged


def test_the_access_log_names_the_path_but_not_the_patient_searched_for(
    app, staff, factory, every_logger_at_debug
):
    """ASVS 5.0 V14.2.1 (sensitive data in URLs), V16.2.5 (no sensitive data in logs). A search
    sends the patient's name, PESEL or MRN in the query string; the access log, like every other
    log, keeps the method, the path and the status, and none of them."""
    with unit_of_work(factory) as s:
        patient = patients.register_patient(
            s,
            staff.actor(Role.COORDINATOR),
            valid_patient(given_name="Bożena", family_name="Wróblewska"),
        )
        searched = {
            "family name": patient.family_name,
            "full name": f"{patient.given_name} {patient.family_name}",
            "PESEL": patient.national_id,
            "MRN": patient.mrn,
        }
        _, secret = auth.create_api_token(
            s, staff.actor(Role.DOCTOR), "search", [Permission.PATIENT_READ.value]
        )
    with running(app) as base_url:
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {secret}"}) as api:
            for query in searched.values():
                found = api.get("/api/v1/patients", params={"q": query, "page": 1})
                assert found.status_code == 200, found.text
                assert [p["id"] for p in found.json()["items"]] == [patient.id], query
        with httpx.Client(base_url=base_url) as browser:  # the page's search box
            assert _sign_in(browser, PASSWORD).status_code == 303
            for query in searched.values():
                page = browser.get("/patients", params={"q": query})
                assert page.status_code == 200 and patient.mrn in page.text

    records = [
        r
        for r in every_logger_at_debug.records
        if r.msg != ROW_DUMP and not r.name.startswith(TEST_CLIENT_LOGGERS)
    ]
    logged = "\n".join(_log_text(r) for r in records)
    # uvicorn's handler and the root logger's both saw each record: count each once.
    access = [r.getMessage() for r in dict.fromkeys(records) if r.name == "uvicorn.access"]
    assert sum('"GET /api/v1/patients HTTP/1.1" 200' in m for m in access) == len(searched)
    assert sum('"GET /patients HTTP/1.1" 200' in m for m in access) == len(searched)
    # Quoted as the URL carries them, and as typed.
    leaked = [
        name
        for name, value in searched.items()
        for form in {value, quote(value), quote_plus(value)}
        if form in logged
    ]
    assert leaked == [], leaked
