"""Patients' data rights (GDPR art. 15 and 17) on both databases: a complete access export with
who read the record; erasure refused during legal retention, and anonymisation after it."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from datetime import UTC, date, datetime

import pytest
from pypdf import PdfReader
from sqlalchemy import func, select, update

from regenspine.audit.models import AuditRecord
from regenspine.auth.permissions import Role
from regenspine.consultations.models import Consultation
from regenspine.db import unit_of_work
from regenspine.eligibility.models import EligibilityDecision, RedFlagScreening
from regenspine.episodes.models import Consent, Episode, EpisodeEvent
from regenspine.patients import service as patients
from regenspine.patients.models import Patient, PatientAmendment
from regenspine.privacy import service
from regenspine.privacy.search_record import search_detail
from tests.conftest import person, valid_patient

EARLY_DAYS = datetime(2020, 3, 2, 9, 0, tzinfo=UTC)
SCAN = b"%PDF-1.4 consent form signed by Jan Kowalski"


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


def _treated_in_the_early_days(factory, staff) -> int:
    """A patient of 2020 whose records hold free text naming him and his family: a corrected
    phone number, a consultation, a cleared red flag, an overridden decision, a scanned consent
    he later withdrew, and an episode cancelled by phone. Every entry is dated EARLY_DAYS."""
    with unit_of_work(factory) as s:
        pid = patients.register_patient(s, staff.actor(Role.COORDINATOR), valid_patient()).id
    with unit_of_work(factory) as s:
        patients.amend_patient(
            s,
            staff.actor(Role.COORDINATOR),
            pid,
            {"phone": "+48 501 502 503"},
            "Jan Kowalski phoned with his new number",
        )
    at = EARLY_DAYS
    with unit_of_work(factory) as s:
        s.execute(update(Patient).where(Patient.id == pid).values(registered_at=at))
        s.execute(update(PatientAmendment).values(amended_at=at))
        episode = Episode(
            patient_id=pid,
            condition_code="disc_protrusion",
            region="lumbar",
            state="cancelled",
            max_cycles=3,
            opened_at=at,
        )
        s.add(episode)
        s.flush()
        consultation = Consultation(
            episode_id=episode.id,
            version=2,
            recorded_at=at,
            recorded_by_name="Test Doctor",
            change_reason="His wife Anna Kowalska corrected the history",
            presenting_complaint="Low back pain since lifting his grandson Piotr Kowalski",
            pain_weeks=30,
            prior_treatments="Physiotherapy with Dr Nowak in Kraków",
            medications="Ibuprofen, bought at Apteka Kowalski",
            level_findings={"L4-L5": {"pfirrmann": 4, "herniation": "protrusion"}},
            diagnoses=[{"condition": "disc_protrusion", "levels": ["L4-L5"]}],
            target_levels=["L4-L5"],
        )
        screening = RedFlagScreening(
            episode_id=episode.id,
            items_version="1",
            answers={"saddle_anaesthesia": True},
            positive=["saddle_anaesthesia"],
            any_positive=True,
            recorded_at=at,
            recorded_by_name="Test Doctor",
            cleared_at=at,
            clearance_note="Reassessed with his wife Anna Kowalska present",
        )
        s.add_all([consultation, screening])
        s.flush()
        s.add_all(
            [
                EligibilityDecision(
                    episode_id=episode.id,
                    consultation_id=consultation.id,
                    screening_id=screening.id,
                    ruleset_version="1",
                    inputs={"pain_weeks": 30},
                    decision="needs_review",
                    fired=[{"rule": "review"}],
                    decided_at=at,
                    overridden_by_name="Test Doctor",
                    override_justification="Mr Kowalski travels from Gdańsk every week",
                    overridden_at=at,
                ),
                Consent(
                    episode_id=episode.id,
                    cycle=1,
                    document_code="bmac",
                    document_version=1,
                    document_hash="0" * 64,
                    language="pl",
                    levels=["L4-L5"],
                    method="scanned_form",
                    signed_name="Jan Kowalski",
                    explained_by_name="Test Doctor",
                    signed_at=at,
                    scan_content_type="application/pdf",
                    scan_sha256=hashlib.sha256(SCAN).hexdigest(),
                    scan_data=SCAN,
                    withdrawn_at=at,
                    withdrawn_reason="Jan Kowalski withdrew by letter",
                ),
                EpisodeEvent(
                    episode_id=episode.id,
                    step="cancel",
                    from_state="consulted",
                    to_state="cancelled",
                    cycle=1,
                    at=at,
                    actor_name="Test Coordinator",
                    reason="His daughter Ewa Kowalska cancelled by phone",
                ),
            ]
        )
    return pid


def test_a_search_is_audited_by_kind_and_whom_it_showed_never_by_what_was_typed(factory, staff):
    """A PESEL or name typed into the search would stay in the hash-chained log for good, and
    the administrator, who reads the log but not patient records, would read it there."""
    with unit_of_work(factory) as s:
        kowalski = patients.register_patient(s, staff.actor(Role.COORDINATOR), valid_patient())
        nowak = patients.register_patient(
            s, staff.actor(Role.COORDINATOR), person("Anna", "Nowak", date(1950, 2, 3), 7, "female")
        )
    typed = {
        "44051401458": ("pesel", [kowalski.id]),
        kowalski.mrn.lower(): ("mrn", [kowalski.id]),
        "14.05.1944": ("date_of_birth", [kowalski.id]),
        "kowal": ("name", [kowalski.id]),
        "AB1234567": ("mrn_or_document", []),
        "Nowak 12": ("other", []),
        "": ("none", [kowalski.id, nowak.id]),  # the whole list, by name
    }
    with unit_of_work(factory) as s:
        for text in typed:
            patients.search_patients(s, staff.actor(Role.DOCTOR), f"  {text} ")
    with factory() as s:
        searches = list(
            s.scalars(
                select(AuditRecord)
                .where(AuditRecord.action == "patient.search")
                .order_by(AuditRecord.seq)
            )
        )
    assert [json.loads(r.detail) for r in searches] == [
        {
            "kind": kind,
            "length": len(text),
            "results": len(ids),
            "page": 1,
            "shown": len(ids),
            "patient_ids": ids,
        }
        for text, (kind, ids) in typed.items()
    ]
    for text in ("44051401458", kowalski.mrn, "1944", "kowal", "AB1234567", "Nowak"):
        assert not any(text.lower() in r.detail.lower() for r in searches), text


def test_a_search_record_keeps_the_first_fifty_patients_it_showed_and_how_many_it_showed():
    detail = search_detail("kowal", 80, 1, list(range(1, 61)))
    assert detail["patient_ids"] == list(range(1, 51))
    assert (detail["shown"], detail["results"]) == (60, 80)


def test_access_export_lists_the_searches_that_showed_the_patient_and_the_record_each_touched(
    clients, factory, staff
):
    pid = _patient(clients)
    with unit_of_work(factory) as s:
        patients.register_patient(
            s, staff.actor(Role.COORDINATOR), person("Anna", "Nowak", date(1950, 2, 3), 7, "female")
        )
    doctor = clients(Role.DOCTOR)
    assert doctor.get("/api/v1/patients", params={"q": "44051401458"}).status_code == 200
    assert doctor.get("/api/v1/patients", params={"q": "nowak"}).status_code == 200
    export = clients(Role.MEDICAL_DIRECTOR).get(f"/api/v1/patients/{pid}/access-export").json()
    accesses = export["record_accesses"]
    searches = [a for a in accesses if a["action"] == "patient.search"]
    assert [(a["who"], a["role"], a["query_kind"]) for a in searches] == [
        ("doctor", "doctor", "pesel")
    ]
    assert all((a["entity_type"], a["entity_id"]) == ("patient", str(pid)) for a in accesses)
    assert [a["at"] for a in accesses] == sorted(a["at"] for a in accesses)


@pytest.mark.parametrize(
    ("model", "column"),
    [
        (Consent, "signed_at"),
        (Consent, "withdrawn_at"),
        (RedFlagScreening, "recorded_at"),
        (RedFlagScreening, "cleared_at"),
        (EligibilityDecision, "decided_at"),
        (EligibilityDecision, "overridden_at"),
    ],
)
def test_retention_runs_from_the_last_consent_screening_or_decision_entry(
    factory, staff, model, column
):
    """Everything in 2020, then (say) the consent withdrawn in 2026 while the episode stayed
    cancelled: the twenty years run from 2026, not from 2020."""
    pid = _treated_in_the_early_days(factory, staff)
    later = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    with unit_of_work(factory) as s:
        s.execute(update(model).values({column: later}))
    with factory() as s:
        retention = service.retention_of(s, s.get(Patient, pid))
    assert retention.last_entry == date(2026, 6, 1)
    assert retention.keep_until == date(2046, 12, 31)


def test_retention_of_a_record_left_alone_since_the_early_days_runs_from_then(factory, staff):
    pid = _treated_in_the_early_days(factory, staff)
    with factory() as s:
        assert service.retention_of(s, s.get(Patient, pid)).last_entry == EARLY_DAYS.date()


def test_anonymisation_replaces_free_text_and_the_scan_and_keeps_coded_clinical_data(
    factory, staff
):
    pid = _treated_in_the_early_days(factory, staff)
    reason = "Letter from Jan Kowalski of 3 May 2041"
    with unit_of_work(factory) as s:
        outcome = service.request_erasure(
            s, staff.actor(Role.MEDICAL_DIRECTOR), pid, reason, today=date(2041, 1, 2)
        )
    assert outcome.erased is True
    marker = "[anonymised]"
    with factory() as s:
        amendment = s.scalars(select(PatientAmendment)).one()
        consultation = s.scalars(select(Consultation)).one()
        screening = s.scalars(select(RedFlagScreening)).one()
        decision = s.scalars(select(EligibilityDecision)).one()
        consent = s.scalars(select(Consent)).one()
        event = s.scalars(select(EpisodeEvent)).one()
        assert amendment.reason == marker
        assert consent.withdrawn_reason == consent.signed_name == marker
        assert consent.scan_data is None
        assert event.reason == marker
        assert consultation.presenting_complaint == consultation.prior_treatments == marker
        assert consultation.medications == consultation.change_reason == marker
        assert screening.clearance_note == decision.override_justification == marker
        # Coded clinical data stay for the registry.
        assert consultation.level_findings == {
            "L4-L5": {"pfirrmann": 4, "herniation": "protrusion"}
        }
        assert consultation.target_levels == consent.levels == ["L4-L5"]
        assert consultation.pain_weeks == 30 and event.to_state == "cancelled"
        assert screening.positive == ["saddle_anaesthesia"] and decision.decision == "needs_review"
        assert consent.withdrawn_at is not None and decision.overridden_at is not None
        assert consent.scan_sha256 == hashlib.sha256(SCAN).hexdigest()
        export = service.access_export(s, staff.actor(Role.MEDICAL_DIRECTOR), pid)
        [done] = s.scalars(select(AuditRecord).where(AuditRecord.action == "privacy.anonymised"))
    assert export["consent_scans"] == []
    held = json.dumps(export, ensure_ascii=False)
    for name in ("Kowalsk", "Nowak", "Kraków", "Gdańsk", "Piotr", "Ewa", "Anna"):
        assert name not in held, name
    assert json.loads(done.detail) == {"reason_length": len(reason)}


def test_access_export_carries_each_scanned_consent_with_its_type_and_hash(clients, factory, staff):
    pid = _treated_in_the_early_days(factory, staff)
    r = clients(Role.MEDICAL_DIRECTOR).get(f"/api/v1/patients/{pid}/access-export")
    assert r.status_code == 200, r.text
    export = r.json()
    [consent] = export["consents"]
    [scan] = export["consent_scans"]
    assert "scan_data" not in consent
    assert scan["consent_id"] == consent["id"]
    assert scan["content_type"] == consent["scan_content_type"] == "application/pdf"
    assert base64.b64decode(scan["data_base64"]) == SCAN
    assert scan["sha256"] == consent["scan_sha256"] == hashlib.sha256(SCAN).hexdigest()
