"""Pages render for the right roles in both languages; settings refuse unsafe production use."""

from __future__ import annotations

import html

import pytest
from sqlalchemy import text

from regenspine.auth.permissions import Role
from regenspine.config import DEFAULT_SECRET_KEY, Settings, UnsafeConfiguration
from tests.conftest import PASSWORD, browser_client, valid_patient

PAGES = [
    ("/patients", Role.NURSE, "Patients", "Pacjenci"),
    ("/patients/new", Role.COORDINATOR, "Register patient", "Zarejestruj pacjenta"),
    ("/patients/{pid}", Role.DOCTOR, "Amendment history", None),
    ("/patients/{pid}/amend", Role.NURSE, "Reason for the correction", None),
    ("/audit", Role.AUDITOR, "Audit log", None),
    ("/admin/users", Role.ADMIN, "Staff accounts", None),
    ("/account", Role.PHYSIOTHERAPIST, "My account", None),
]


@pytest.mark.parametrize("language", ["en", "pl"])
@pytest.mark.parametrize(("path", "role", "english", "polish"), PAGES, ids=[p[0] for p in PAGES])
def test_page_renders_in_the_users_language(clients, path, role, english, polish, language):
    pid = clients(Role.COORDINATOR).post("/api/v1/patients", json=valid_patient()).json()["id"]
    client = clients(role)
    client.post("/language", data={"language": language, "next": "/account"})
    r = client.get(path.format(pid=pid))
    assert r.status_code == 200, r.text
    assert f'<html lang="{language}">' in r.text
    if language == "en":
        assert english in r.text
    elif polish:
        assert polish in r.text
        assert english not in r.text


@pytest.mark.parametrize(
    ("path", "role", "words"),
    [
        ("/patients/new", Role.AUDITOR, "register patients (patient:create)"),
        ("/audit", Role.NURSE, "read the audit log (audit:read)"),
        ("/admin/users", Role.DOCTOR, "manage staff accounts (user:manage)"),
        ("/patients", Role.ADMIN, "read patient records (patient:read)"),
    ],
)
def test_pages_refuse_roles_without_the_permission_in_words(clients, path, role, words):
    r = clients(role).get(path)
    assert r.status_code == 403
    assert "Your role does not allow you to " + words in html.unescape(r.text)


def test_pages_send_anonymous_visitors_to_sign_in(app, staff):
    r = browser_client(app).get("/patients/1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=/patients/1")


def test_sign_in_never_redirects_to_another_site(app, staff):
    client = browser_client(app)
    client.get("/login")
    r = client.post(
        "/login",
        data={
            "username": "nurse",
            "password": "correct-horse-battery-staple-42",
            "next": "//evil.example/phish",
            "csrf_token": client.cookies["rs_csrf"],
        },
        follow_redirects=False,
    )
    assert r.headers["location"] == "/patients"


@pytest.mark.parametrize(
    "next_", ["/%09/x//evil.example/", "/%0a/x//evil.example", "/%5cevil.example"]
)
def test_a_signed_in_browser_is_never_sent_to_another_site_from_the_sign_in_page(clients, next_):
    """ASVS 5.0 V5.1.5: a link to the clinic's own sign-in page whose `next` hides another
    site behind a tab, a line break or a backslash sends a signed-in user to the start page."""
    r = clients(Role.NURSE).get(f"/login?next={next_}", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/patients"


def test_a_page_asked_for_by_htmx_without_a_session_says_where_to_sign_in_in_any_script(app):
    """A path with letters outside Latin-1 (here "€" and "ż") used to fail the answer's
    HX-Redirect header with a server error; it is now sent encoded, and brings the browser
    back to the same page after sign-in."""
    client = browser_client(app)
    for path, encoded in (
        ("/patients/%E2%82%AC", "/patients/%E2%82%AC"),
        ("/patients/%C5%BC", "/patients/%C5%BC"),
    ):
        r = client.get(path, headers={"HX-Request": "true"}, follow_redirects=False)
        assert r.status_code == 401, r.text[:200]
        assert r.headers["hx-redirect"] == f"/login?next={encoded}"
        plain = client.get(path, follow_redirects=False)
        assert plain.status_code == 303 and plain.headers["location"] == f"/login?next={encoded}"


def test_stored_markup_in_free_text_is_shown_as_text(clients):
    client = clients(Role.NURSE)
    pid = client.post(
        "/api/v1/patients", json=valid_patient(address='<img src=x onerror="alert(1)">')
    ).json()["id"]
    page = client.get(f"/patients/{pid}").text
    assert '<img src=x onerror="alert(1)">' not in page
    assert "&lt;img src=x onerror=" in page


def test_openapi_description_lists_the_api(app, staff):
    spec = browser_client(app).get("/openapi.json").json()
    assert "/api/v1/patients" in spec["paths"]
    assert "422" in spec["paths"]["/api/v1/patients"]["post"]["responses"]


def test_sqlite_runs_with_wal_full_sync_and_foreign_keys(factory):
    with factory() as s:
        if s.get_bind().dialect.name != "sqlite":
            return  # the PostgreSQL run checks nothing SQLite-specific here
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert s.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert s.execute(text("PRAGMA busy_timeout")).scalar() >= 5000


def test_production_refuses_the_default_or_a_short_secret_key_and_names_the_variable():
    with pytest.raises(UnsafeConfiguration, match="REGENSPINE_SECRET_KEY"):
        Settings(env="production", secret_key=DEFAULT_SECRET_KEY)
    with pytest.raises(UnsafeConfiguration, match="REGENSPINE_SECRET_KEY"):
        Settings(env="production", secret_key="short")
    with pytest.raises(UnsafeConfiguration, match="ARGON2"):
        Settings(env="production", secret_key="x" * 40, argon2_time_cost=1)
    ok = Settings(
        env="production", secret_key="x" * 40, argon2_time_cost=3, argon2_memory_cost=65536
    )
    assert ok.mfa_enforced


def test_production_refuses_unencrypted_connections_to_a_mail_or_database_server_elsewhere():
    """ASVS 5.0 V12.3.1, V12.3.2: a mail or database server on another machine is reached
    over TLS that checks the server's certificate and name; on this machine (loopback or a
    Unix socket) nothing crosses a network. Development refuses nothing."""
    safe = {
        "env": "production",
        "secret_key": "x" * 40,
        "argon2_time_cost": 3,
        "argon2_memory_cost": 65536,
    }
    with pytest.raises(UnsafeConfiguration, match="REGENSPINE_SMTP_STARTTLS must be true"):
        Settings(**safe, smtp_host="mail.clinic.example")
    for host in ("127.0.0.1", "localhost", "::1"):
        assert Settings(**safe, smtp_host=host).smtp_host == host
    assert Settings(**safe, smtp_host="mail.clinic.example", smtp_starttls=True)

    remote = "postgresql+psycopg://regenspine:pw@db.clinic.example:5432/regenspine"
    for url in (remote, remote + "?sslmode=require", remote + "?sslmode=prefer"):
        with pytest.raises(UnsafeConfiguration, match=r"\?sslmode=verify-full"):
            Settings(**safe, database_url=url)
    for url in (
        remote + "?sslmode=verify-full",
        remote + "?sslmode=verify-ca",
        "postgresql+psycopg://regenspine@127.0.0.1:5432/regenspine",
        "postgresql+psycopg:///regenspine?host=/var/run/postgresql",
        "sqlite:///var/regenspine.db",
    ):
        assert Settings(**safe, database_url=url).database_url == url
    assert Settings(env="development", smtp_host="mail.clinic.example", database_url=remote)


def test_many_failures_from_one_address_lock_sign_in_from_it(app, staff):
    client = browser_client(app)
    client.get("/login")
    for n in range(30):
        client.post(
            "/login",
            data={
                "username": f"ghost{n}",
                "password": "nope-nope-nope",
                "csrf_token": client.cookies["rs_csrf"],
            },
        )
    r = client.post(
        "/login",
        data={
            "username": "nurse",
            "password": "correct-horse-battery-staple-42",
            "csrf_token": client.cookies["rs_csrf"],
        },
        follow_redirects=False,
    )
    assert r.status_code == 401


def test_an_administrator_starts_on_the_audit_log_not_on_a_page_their_role_refuses(
    app, staff, clients
):
    """An administrator reads no patient: signing in used to land them on the patient list's
    refusal, whose "Back to the start page" led to the same refusal."""
    client = browser_client(app)
    client.get("/login")
    r = client.post(
        "/login",
        data={
            "username": staff.username(Role.ADMIN),
            "password": PASSWORD,
            "csrf_token": client.cookies["rs_csrf"],
        },
        follow_redirects=False,
    )
    assert r.headers["location"] == "/audit"
    assert client.get("/audit").status_code == 200
    assert client.get("/", follow_redirects=False).headers["location"] == "/audit"
    assert clients(Role.NURSE).get("/", follow_redirects=False).headers["location"] == "/patients"
    assert browser_client(app).get("/", follow_redirects=False).headers["location"] == "/login"
