"""In production the clinic is reached over TLS only (OWASP ASVS 5.0 V3.3.1, V3.4.1): every
cookie it sets carries Secure, so a browser never sends a session or a CSRF token over plain
HTTP, and every answer carries Strict-Transport-Security, so a browser that has been here once
never tries plain HTTP again. In development neither, so the clinic works over plain HTTP on
localhost."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from regenspine.app import create_app
from regenspine.config import get_settings
from tests.conftest import PASSWORD, browser_client

HSTS = "max-age=31536000; includeSubDomains"


@pytest.fixture
def production_app(database_url, staff, monkeypatch) -> Iterator[FastAPI]:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REGENSPINE_ENV", "production")
    monkeypatch.setenv("REGENSPINE_SECRET_KEY", "production-test-" + "k" * 40)
    monkeypatch.setenv("REGENSPINE_ARGON2_TIME_COST", "2")  # the lowest production accepts
    monkeypatch.setenv("REGENSPINE_ARGON2_MEMORY_COST", "19456")
    monkeypatch.setenv("REGENSPINE_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        assert get_settings().is_production
        yield create_app(get_settings())
    finally:
        get_settings.cache_clear()


def _cookies_set(response: httpx.Response) -> dict[str, str]:
    """Each cookie the answer sets, by name, with its attributes as sent."""
    found = {}
    for header in response.headers.get_list("set-cookie"):
        name = header.split("=", 1)[0].strip()
        found[name] = header
    return found


def _assert_secure(response: httpx.Response, *names: str) -> None:
    cookies = _cookies_set(response)
    assert set(names) <= set(cookies), f"expected cookies {names}, got {sorted(cookies)}"
    for name, header in cookies.items():
        attributes = [a.strip().lower() for a in header.split(";")[1:]]
        assert "secure" in attributes, f"{name} is set without Secure: {header}"
        assert "httponly" in attributes, f"{name} is set without HttpOnly: {header}"
        assert "samesite=lax" in attributes, f"{name} is set without SameSite: {header}"
        if name.startswith("__Host-"):  # else a browser drops it
            assert "path=/" in attributes, header
            assert not any(a.startswith("domain=") for a in attributes), header


def _sign_in_nurse(client: TestClient) -> httpx.Response:
    """Signs in over HTTPS with the prefixed CSRF cookie the sign-in page set."""
    signed_in = client.post(
        "/login",
        data={
            "username": "nurse",
            "password": PASSWORD,
            "csrf_token": client.cookies["__Host-rs_csrf"],
        },
        follow_redirects=False,
    )
    assert signed_in.status_code == 303, signed_in.text
    return signed_in


def test_in_production_every_cookie_is_secure_and_every_answer_asks_for_https(production_app):
    """Every cookie also carries the __Host- prefix in production (ASVS V3.3.3): a browser keeps
    it only from this host, over HTTPS, with Path=/ and no Domain."""
    client = TestClient(production_app, base_url="https://127.0.0.1", raise_server_exceptions=False)

    form = client.get("/login")
    assert form.status_code == 200
    assert form.headers["strict-transport-security"] == HSTS
    _assert_secure(form, "__Host-rs_csrf")

    signed_in = _sign_in_nurse(client)
    _assert_secure(signed_in, "__Host-rs_session", "__Host-rs_lang")

    me = client.get("/api/v1/me")
    assert me.status_code == 200
    assert me.headers["strict-transport-security"] == HSTS
    csrf = me.json()["csrf_token"]

    language = client.post(
        "/language", data={"language": "pl", "csrf_token": csrf}, follow_redirects=False
    )
    assert language.status_code == 303
    _assert_secure(language, "__Host-rs_lang")

    for refused in (
        client.get("/api/v1/patients/999999"),  # 403: two-step sign-in is owed in production
        client.get("/no-such-page"),  # 404 from the router
        TestClient(production_app, base_url="https://127.0.0.1").get("/api/v1/me"),  # 401
    ):
        assert refused.status_code in (401, 403, 404)
        assert refused.headers["strict-transport-security"] == HSTS

    signed_out = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert signed_out.status_code == 303
    _assert_secure(signed_out, "__Host-rs_session")  # the deletion too, with the same attributes
    assert '__Host-rs_session=""' in _cookies_set(signed_out)["__Host-rs_session"]


def test_in_production_a_cookie_without_the_host_prefix_is_not_taken_for_a_session(
    production_app,
):
    """Cookie tossing (ASVS V3.3.3): a page on a sibling subdomain, or one sent over plain HTTP
    on the clinic's network, can set a cookie named rs_session or rs_csrf for the clinic's
    host, though never one with the __Host- prefix. In production the clinic reads only the
    prefixed names, so a planted session token or CSRF token is ignored."""
    victim = TestClient(production_app, base_url="https://127.0.0.1")
    victim.get("/login")
    _sign_in_nurse(victim)
    session = victim.cookies["__Host-rs_session"]
    assert victim.get("/api/v1/me").status_code == 200

    attacker = TestClient(production_app, base_url="https://127.0.0.1")
    attacker.cookies.set("rs_session", session)  # as a sibling subdomain could plant it
    assert attacker.get("/api/v1/me").status_code == 401

    planted_csrf = "planted-by-a-sibling-subdomain"
    stranger = TestClient(production_app, base_url="https://127.0.0.1")
    stranger.cookies.set("rs_csrf", planted_csrf)
    refused = stranger.post(
        "/login",
        data={"username": "nurse", "password": PASSWORD, "csrf_token": planted_csrf},
        follow_redirects=False,
    )
    assert refused.status_code == 403
    assert "__Host-rs_session" not in stranger.cookies


def test_in_development_the_clinic_works_over_plain_http(app, staff):
    client = browser_client(app)  # http://127.0.0.1
    form = client.get("/login")
    assert "strict-transport-security" not in form.headers
    assert "secure" not in _cookies_set(form)["rs_csrf"].lower()
    signed_in = client.post(
        "/login",
        data={"username": "nurse", "password": PASSWORD, "csrf_token": client.cookies["rs_csrf"]},
        follow_redirects=False,
    )
    assert signed_in.status_code == 303
    assert client.get("/api/v1/me").status_code == 200  # the cookie came back over HTTP


def test_in_production_the_api_map_and_the_version_are_not_published(
    production_app, database_url, monkeypatch
):
    """ASVS V13.4.5 (API documentation is not public in production) and V13.4.6 (no version
    of the software in answers): a stranger learns neither the endpoints nor which known
    weaknesses to try. Development publishes both, and a clinic may choose to publish the
    API reference in production with REGENSPINE_PUBLISH_API_DOCS."""
    client = TestClient(production_app, base_url="https://127.0.0.1", raise_server_exceptions=False)
    assert client.get("/openapi.json").status_code == 404
    assert client.get("/api/docs").status_code == 404
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "database": True}

    monkeypatch.setenv("REGENSPINE_PUBLISH_API_DOCS", "true")
    get_settings.cache_clear()
    published = TestClient(create_app(get_settings()), base_url="https://127.0.0.1")
    assert published.get("/openapi.json").json()["info"]["title"] == "RegenSpine"

    monkeypatch.setenv("REGENSPINE_ENV", "development")
    monkeypatch.delenv("REGENSPINE_PUBLISH_API_DOCS")
    get_settings.cache_clear()
    development = browser_client(create_app(get_settings()))
    assert development.get("/openapi.json").status_code == 200
    assert development.get("/api/docs").status_code == 200
    assert "version" in development.get("/healthz").json()
