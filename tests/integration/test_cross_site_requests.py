"""Counted and recorded reads answer only requests from the clinic's own pages (ASVS 5.0
V3.5.1, V3.5.3), as a browser reports them in `Sec-Fetch-Site`.

The exports and the chain check are GETs: a link or a redirect on another site makes a
signed-in browser send them with its session cookie (SameSite=Lax lets a top-level
navigation through). Each is counted against a per-account limit or written into the log as
an export of a patient's data, so each must be refused when it comes from elsewhere.
"""

from __future__ import annotations

import html

import pytest

from regenspine.auth.permissions import Role
from tests.conftest import audit_count, browser_client, valid_patient

REFUSAL = "This can only be started from the clinic's own pages"
# (who asks, the address, the log action it writes when it is served)
COUNTED = [
    (Role.AUDITOR, "/audit/export.csv", "audit.export"),
    (Role.AUDITOR, "/api/v1/audit/records.csv", "audit.export"),
    (Role.AUDITOR, "/api/v1/audit/verify", "audit.verify"),
    (Role.MEDICAL_DIRECTOR, "/api/v1/patients/{pid}/access-export", "privacy.access_export"),
    (Role.MEDICAL_DIRECTOR, "/api/v1/patients/{pid}/access-export.pdf", "privacy.access_export"),
]


@pytest.fixture
def pid(clients) -> int:  # type: ignore[no-untyped-def]
    return clients(Role.COORDINATOR).post("/api/v1/patients", json=valid_patient()).json()["id"]


@pytest.mark.parametrize(("role", "path", "action"), COUNTED, ids=[c[1] for c in COUNTED])
def test_a_counted_read_sent_from_another_site_is_refused_and_counts_nothing(
    clients, factory, pid, role, path, action
):
    client = clients(role)
    url = path.format(pid=pid)
    before = audit_count(factory, action)
    for site in ("cross-site", "same-site"):
        r = client.get(url, headers={"Sec-Fetch-Site": site, "Sec-Fetch-Mode": "navigate"})
        assert r.status_code == 403, (site, r.status_code, r.text[:200])
        assert REFUSAL in html.unescape(r.text)
    assert audit_count(factory, action) == before

    own = client.get(url, headers={"Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 200, own.text[:300]
    typed = client.get(url, headers={"Sec-Fetch-Site": "none"})  # typed or bookmarked
    assert typed.status_code == 200, typed.text[:300]
    assert audit_count(factory, action) == before + 2


def test_a_program_with_an_api_token_is_not_asked_where_it_comes_from(app, clients, factory):
    """A browser never attaches a bearer token on its own, so the token proves the program
    sent it; integrations send no Fetch Metadata at all, and one that does is still served."""
    made = clients(Role.AUDITOR).post(
        "/api/v1/tokens", json={"name": "archive", "scopes": ["audit:read"]}
    )
    assert made.status_code == 201, made.text
    program = browser_client(app)
    program.headers["Authorization"] = f"Bearer {made.json()['token']}"
    before = audit_count(factory, "audit.verify")
    assert program.get("/api/v1/audit/verify").status_code == 200
    r = program.get("/api/v1/audit/verify", headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 200, r.text
    assert audit_count(factory, "audit.verify") == before + 2
