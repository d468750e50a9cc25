"""The JSON API: who may call what, refusals that say why and store nothing, problem responses."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from regenspine.audit.models import AuditRecord
from regenspine.auth.permissions import Role
from regenspine.patients.models import Patient
from tests.conftest import browser_client, valid_patient

ALL = set(Role)
CLINICAL_WRITERS = {Role.COORDINATOR, Role.DOCTOR, Role.NURSE, Role.MEDICAL_DIRECTOR}
PATIENT_READERS = ALL - {Role.ADMIN}

# (method, path template, body, roles allowed). {pid} is a patient on nobody's care team.
MATRIX = [
    ("GET", "/api/v1/patients", None, PATIENT_READERS),
    ("GET", "/api/v1/patients/{pid}", None, PATIENT_READERS - {Role.PHYSIOTHERAPIST}),
    ("GET", "/api/v1/patients/{pid}/amendments", None, PATIENT_READERS - {Role.PHYSIOTHERAPIST}),
    ("POST", "/api/v1/patients", "new_patient", CLINICAL_WRITERS),
    ("POST", "/api/v1/patients/{pid}/amendments", "amendment", CLINICAL_WRITERS),
    ("GET", "/api/v1/audit/records", None, {Role.ADMIN, Role.MEDICAL_DIRECTOR, Role.AUDITOR}),
    ("GET", "/api/v1/audit/records.csv", None, {Role.MEDICAL_DIRECTOR, Role.AUDITOR}),
    ("GET", "/api/v1/audit/verify", None, {Role.ADMIN, Role.MEDICAL_DIRECTOR, Role.AUDITOR}),
    ("GET", "/api/v1/users", None, {Role.ADMIN}),
    ("GET", "/api/v1/catalog/conditions", None, ALL),
    ("GET", "/api/v1/me", None, ALL),
    ("GET", "/api/v1/worklist", None, ALL - {Role.ADMIN}),
    ("GET", "/api/v1/patients/{pid}/episodes", None, ALL - {Role.ADMIN, Role.PHYSIOTHERAPIST}),
    (
        "POST",
        "/api/v1/patients/{pid}/episodes",
        "episode",
        {Role.COORDINATOR, Role.DOCTOR, Role.MEDICAL_DIRECTOR},
    ),
]


def _patient_id(client) -> int:
    r = client.post("/api/v1/patients", json=valid_patient())
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.mark.parametrize(
    ("method", "path", "body", "allowed"), MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX]
)
def test_each_role_is_allowed_or_refused_as_the_permission_table_says(
    clients, method, path, body, allowed
):
    pid = _patient_id(clients(Role.COORDINATOR))
    counter = iter(range(100))
    for role in Role:
        payload = body
        if body == "new_patient":
            n = next(counter)
            payload = valid_patient(
                id_type="passport",
                national_id=f"P{role.value[:3].upper()}{n:04d}",
                id_country="DE",
                given_name="Test",
                family_name=f"Role{chr(65 + n)}",
            )
        if body == "episode":
            conditions = [
                "disc_protrusion",
                "disc_herniation",
                "spinal_stenosis",
                "degenerative_disc_disease",
                "sciatica",
                "radiculopathy",
                "annular_fissure",
                "low_back_pain",
            ]
            payload = {"condition_code": conditions[list(Role).index(role)], "region": "lumbar"}
        if body == "amendment":
            payload = {"changes": {"city": f"Miasto {role.value}"}, "reason": "Moved house"}
        r = clients(role).request(method, path.format(pid=pid), json=payload)
        if role in allowed:
            assert r.status_code < 300, (role, r.status_code, r.text)
        else:
            assert r.status_code == 403, (role, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")


def test_refused_access_is_written_to_the_audit_log(clients, factory):
    pid = _patient_id(clients(Role.COORDINATOR))
    assert clients(Role.PHYSIOTHERAPIST).get(f"/api/v1/patients/{pid}").status_code == 403
    assert clients(Role.AUDITOR).post("/api/v1/patients", json=valid_patient()).status_code == 403
    with factory() as s:
        refused = s.scalars(select(AuditRecord).where(AuditRecord.outcome == "refused")).all()
    assert {(r.actor_username, r.action) for r in refused} == {
        ("physiotherapist", "patient.read"),
        ("auditor", "permission.denied"),
    }
    assert any(r.patient_id == pid for r in refused)


def test_reading_a_chart_is_audited_with_who_and_which_patient(clients, factory):
    pid = _patient_id(clients(Role.COORDINATOR))
    assert clients(Role.DOCTOR).get(f"/api/v1/patients/{pid}").status_code == 200
    with factory() as s:
        reads = s.scalars(select(AuditRecord).where(AuditRecord.action == "patient.read")).all()
    assert [(r.actor_username, r.actor_role, r.patient_id) for r in reads] == [
        ("doctor", "doctor", pid)
    ]


def test_unauthenticated_api_call_gets_401_problem(app, staff):
    r = browser_client(app).get("/api/v1/patients")
    assert r.status_code == 401
    body = r.json()
    assert body["status"] == 401 and body["reference"] and "detail" in body


BAD_INPUT = [
    ({"national_id": "44051401459"}, "national_id", "check digit"),
    ({"date_of_birth": "2999-01-01"}, "date_of_birth", "future"),
    ({"family_name": "K" * 101}, "family_name", "at most 100"),
    ({"given_name": "<script>alert(1)</script>"}, "given_name", "letters"),
    ({"sex": "robot"}, "sex", "female, male"),
    ({"date_of_birth": "1944-05-15"}, "national_id", "1944-05-14"),
]


@pytest.mark.parametrize(
    ("override", "field", "words"), BAD_INPUT, ids=[b[1] + "-" + b[2] for b in BAD_INPUT]
)
def test_invalid_registration_says_what_is_wrong_and_stores_nothing(
    clients, factory, override, field, words
):
    r = clients(Role.NURSE).post("/api/v1/patients", json=valid_patient(**override))
    assert r.status_code == 422
    assert words in r.json()["errors"][field]
    with factory() as s:
        assert s.scalar(select(func.count(Patient.id))) == 0


def test_unknown_fields_are_refused(clients, factory):
    r = clients(Role.NURSE).post("/api/v1/patients", json=valid_patient(is_admin="yes"))
    assert r.status_code == 422
    with factory() as s:
        assert s.scalar(select(func.count(Patient.id))) == 0


def test_wrong_csrf_token_is_refused_and_stores_nothing(clients, factory):
    client = clients(Role.NURSE)
    r = client.post("/api/v1/patients", json=valid_patient(), headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403
    assert "nothing was saved" in r.json()["detail"]
    form = client.post(
        "/patients/new",
        data=valid_patient() | {"csrf_token": "forged"},
        headers={"X-CSRF-Token": ""},
    )
    assert form.status_code == 403
    with factory() as s:
        assert s.scalar(select(func.count(Patient.id))) == 0


def test_duplicate_registration_returns_the_existing_record(clients):
    client = clients(Role.NURSE)
    first = client.post("/api/v1/patients", json=valid_patient()).json()
    again = client.post("/api/v1/patients", json=valid_patient())
    assert again.status_code == 409
    assert again.json()["candidates"][0]["mrn"] == first["mrn"]


def test_amendment_history_is_visible_through_the_api(clients):
    client = clients(Role.DOCTOR)
    pid = _patient_id(client)
    r = client.post(
        f"/api/v1/patients/{pid}/amendments",
        json={"changes": {"phone": "+48 500 600 700"}, "reason": "New mobile number"},
    )
    assert r.status_code == 201
    history = client.get(f"/api/v1/patients/{pid}/amendments").json()
    assert [(h["field"], h["old_value"], h["new_value"], h["reason"]) for h in history] == [
        ("phone", "+48 600 100 200", "+48 500 600 700", "New mobile number")
    ]


def test_auditor_exports_the_filtered_audit_log_as_csv(clients):
    pid = _patient_id(clients(Role.COORDINATOR))
    clients(Role.DOCTOR).get(f"/api/v1/patients/{pid}")
    r = clients(Role.AUDITOR).get(f"/api/v1/audit/records.csv?patient_id={pid}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().splitlines()
    assert lines[0].startswith("seq,at,actor_username")
    assert {line.split(",")[4] for line in lines[1:]} == {"patient.create", "patient.read"}
    page = clients(Role.AUDITOR).get(f"/audit/export.csv?patient_id={pid}")
    assert page.status_code == 200 and page.text.count("\n") == len(lines)


def test_security_headers_are_on_every_response(app, staff):
    r = browser_client(app).get("/login")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "same-origin"
    assert r.headers["cache-control"] == "no-store"


def test_health_check_reports_the_database(app, staff):
    assert browser_client(app).get("/healthz").json()["database"] is True


def test_health_check_answers_503_when_the_database_is_unreachable(tmp_path):
    from regenspine.app import create_app
    from regenspine.config import get_settings

    settings = get_settings().model_copy(
        update={"database_url": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    )
    r = browser_client(create_app(settings)).get("/healthz")
    assert r.status_code == 503 and r.json()["database"] is False


def test_an_unexpected_error_returns_a_reference_and_no_stack_trace(clients, monkeypatch):
    from regenspine.patients import service

    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail /etc/passwd")

    monkeypatch.setattr(service, "search_patients", explode)
    r = clients(Role.NURSE).get("/api/v1/patients")
    assert r.status_code == 500
    body = r.json()
    assert len(body["reference"]) == 12
    assert "secret" not in r.text and "Traceback" not in r.text


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def test_an_unexpected_error_on_a_page_shows_a_page_with_the_reference_and_the_headers(
    clients, monkeypatch, caplog
):
    """ASVS 5.0 V16.5.1 (generic error with a reference, no internals), V3.4.x (security
    headers on every answer): Starlette answers an unexpected error from outside the app's
    middleware, so neither the page nor the API answer may lose the headers there."""
    from regenspine.patients import service

    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail /etc/passwd")

    monkeypatch.setattr(service, "search_patients", explode)
    nurse = clients(Role.NURSE)
    page = nurse.get("/patients", headers={"accept": "text/html"})
    api = nurse.get("/api/v1/patients")
    for r in (page, api):
        assert r.status_code == 500
        assert "secret" not in r.text and "Traceback" not in r.text
        assert {k: r.headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert page.headers["content-type"].startswith("text/html")
    logged = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("unhandled error")
    ]
    # The page names the reference of its log entry, in the nurse's language.
    page_reference = re.search(r"\b([0-9a-f]{12})\b", page.text)
    assert page_reference is not None, page.text
    assert any(f"reference={page_reference.group(1)} path=/patients" in m for m in logged)
    assert (
        "nic nie zostało zapisane" in page.text.lower() or "nothing was saved" in page.text.lower()
    )
    assert any(f"reference={api.json()['reference']} path=/api/v1/patients" in m for m in logged)


def test_when_even_the_error_page_fails_a_plain_page_still_gives_the_reference(
    clients, monkeypatch, caplog
):
    from regenspine.patients import service
    from regenspine.web import problems

    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail /etc/passwd")

    monkeypatch.setattr(service, "search_patients", explode)
    monkeypatch.setattr(problems, "render", explode)
    r = clients(Role.NURSE).get("/patients", headers={"accept": "text/html"})
    assert r.status_code == 500 and r.headers["content-type"].startswith("text/html")
    assert "secret" not in r.text and "Nothing was saved" in r.text
    reference = re.search(r"\b([0-9a-f]{12})\b", r.text)
    assert reference is not None, r.text
    assert any(f"reference={reference.group(1)}" in m.getMessage() for m in caplog.records)
    assert {k: r.headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS
