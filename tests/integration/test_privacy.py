"""Patients' data rights (GDPR art. 15 and 17) on both databases: a complete access export with
who read the record; erasure refused during legal retention, and anonymisation after it."""

from __future__ import annotations

import io
from datetime import date

from pypdf import PdfReader
from sqlalchemy import func, select

from regenspine.audit.models import AuditRecord
from regenspine.auth.permissions import Role
from regenspine.db import unit_of_work
from regenspine.episodes.models import EpisodeEvent
from regenspine.patients.models import Patient
from regenspine.privacy import service
from tests.conftest import valid_patient


def _patient(clients) -> int:
    coordinator = clients(Role.COORDINATOR)
    pid = coordinator.post("/api/v1/patients", json=valid_patient()).json()["id"]
    coordinator.post(
        f"/api/v1/patients/{pid}/amendments",
        json={"changes": {"phone": "+48 501 502 503"}, "reason": "New number"},
    )
    clients(Role.DOCTOR).get(f"/api/v1/patients/{pid}")
    return pid


def test_access_export_holds_everything_including_who_read_the_record(clients):
    pid = _patient(clients)
    r = clients(Role.MEDICAL_DIRECTOR).get(f"/api/v1/patients/{pid}/access-export")
    assert r.status_code == 200, r.text
    export = r.json()
    assert export["patient"]["national_id"] == "44051401458"
    assert [a["field"] for a in export["amendments"]] == ["phone"]
    readers = {(a["who"], a["action"]) for a in export["record_accesses"]}
    assert ("doctor", "patient.read") in readers and ("coordinator", "patient.create") in readers
    assert clients(Role.NURSE).get(f"/api/v1/patients/{pid}/access-export").status_code == 403
    assert clients(Role.ADMIN).get(f"/api/v1/patients/{pid}/access-export").status_code == 403


def test_access_export_is_also_a_readable_pdf(clients):
    pid = _patient(clients)
    r = clients(Role.MEDICAL_DIRECTOR).get(f"/api/v1/patients/{pid}/access-export.pdf?lang=en")
    assert r.status_code == 200 and r.content.startswith(b"%PDF-")
    text = "".join(
        "".join(p.extract_text() for p in PdfReader(io.BytesIO(r.content)).pages).split()
    )
    assert "Kowalski" in text and "Whoaccessedyourrecord" in text and "doctor" in text


def test_erasure_during_retention_is_refused_with_the_reason_and_recorded(clients, factory):
    pid = _patient(clients)
    r = clients(Role.MEDICAL_DIRECTOR).post(
        f"/api/v1/patients/{pid}/erasure-requests", json={"reason": "Patient asked by letter"}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["erased"] is False
    assert body["keep_until"] == f"{date.today().year + 20}-12-31"
    assert "20 years" in body["message"]
    with factory() as s:
        assert s.get(Patient, pid).family_name == "Kowalski"
        refused = s.scalar(
            select(func.count(AuditRecord.id)).where(
                AuditRecord.action == "privacy.erasure_refused", AuditRecord.outcome == "refused"
            )
        )
    assert refused == 1


def test_cell_product_traceability_is_kept_thirty_years(clients, factory, staff):
    pid = _patient(clients)
    episode = (
        clients(Role.COORDINATOR)
        .post(
            f"/api/v1/patients/{pid}/episodes",
            json={"condition_code": "disc_protrusion", "region": "lumbar"},
        )
        .json()["id"]
    )
    with unit_of_work(factory) as s:  # the procedure-day steps arrive with a later issue
        s.add(
            EpisodeEvent(
                episode_id=episode,
                step="harvest",
                from_state="scheduled",
                to_state="harvested",
                cycle=1,
                actor_name="Test Doctor",
            )
        )
    with unit_of_work(factory) as s:
        outcome = service.request_erasure(
            s,
            staff.actor(Role.MEDICAL_DIRECTOR),
            pid,
            "Patient asked",
            today=date(date.today().year + 25, 1, 1),
        )
    assert outcome.erased is False
    assert outcome.retention.keep_until.year == date.today().year + 30


def test_after_retention_the_identity_is_anonymised_and_clinical_data_remain(
    clients, factory, staff
):
    pid = _patient(clients)
    with unit_of_work(factory) as s:
        outcome = service.request_erasure(
            s,
            staff.actor(Role.MEDICAL_DIRECTOR),
            pid,
            "Patient asked",
            today=date(date.today().year + 21, 1, 2),
        )
    assert outcome.erased is True
    with factory() as s:
        patient = s.get(Patient, pid)
    assert patient.family_name == "[anonymised]" and patient.national_id is None
    assert patient.phone is None and patient.date_of_birth == date(1944, 1, 1)
    assert patient.mrn.startswith("RS")
