"""Patients' data rights at the command line, on both databases: `regenspine privacy anonymise`
refuses during legal retention (and records it) and anonymises after it; `regenspine privacy
export` writes the access export as JSON or PDF; both audited as the API's requests are."""

from __future__ import annotations

import io
import json
import stat
from datetime import UTC, date, datetime

import pytest
from pypdf import PdfReader
from sqlalchemy import select, update
from typer.testing import CliRunner

from regenspine.audit.models import AuditRecord
from regenspine.auth.permissions import Role
from regenspine.config import get_settings
from regenspine.db import unit_of_work
from regenspine.patients import service as patients
from regenspine.patients.models import Patient, PatientAmendment
from tests.conftest import valid_patient

REASON = "Patient asked by letter of 3 May"


@pytest.fixture
def cli(database_url, monkeypatch):
    from regenspine.cli import app

    monkeypatch.setenv("REGENSPINE_DATABASE_URL", database_url)
    get_settings.cache_clear()
    runner = CliRunner()
    yield lambda *args: runner.invoke(app, ["privacy", *args])
    get_settings.cache_clear()


@pytest.fixture
def patient(factory, staff) -> Patient:
    """A registered patient whose phone number was corrected once and whom a doctor read."""
    with unit_of_work(factory) as s:
        registered = patients.register_patient(s, staff.actor(Role.COORDINATOR), valid_patient())
    with unit_of_work(factory) as s:
        patients.amend_patient(
            s,
            staff.actor(Role.COORDINATOR),
            registered.id,
            {"phone": "+48 501 502 503"},
            "New number",
        )
        patients.get_patient(s, staff.actor(Role.DOCTOR), registered.id)
    return registered


def last_seen_years_ago(factory, patient_id: int, years: int) -> None:
    """The record's last entry was made `years` ago (a patient of the clinic's early days)."""
    then = datetime.now(UTC).replace(year=datetime.now(UTC).year - years)
    with unit_of_work(factory) as s:
        s.execute(update(Patient).where(Patient.id == patient_id).values(registered_at=then))
        s.execute(
            update(PatientAmendment)
            .where(PatientAmendment.patient_id == patient_id)
            .values(amended_at=then)
        )


def audit_records(factory, action: str) -> list[AuditRecord]:
    with factory() as s:
        return list(
            s.scalars(
                select(AuditRecord).where(AuditRecord.action == action).order_by(AuditRecord.seq)
            )
        )


def squeeze(text: str) -> str:
    return " ".join(text.split())


def test_anonymise_during_retention_is_refused_with_the_reason_recorded_and_exits_1(
    cli, factory, patient
):
    """ASVS 5.0 V14.2.x (data retention), V16.3.x (the refused request is logged)."""
    result = cli(
        "anonymise", "--patient", patient.mrn, "--reason", REASON, "--as", "medical-director"
    )
    assert result.exit_code == 1, result.output
    said = squeeze(result.output)
    assert f"the law requires keeping these records until {date.today().year + 20}-12-31" in said
    assert "20 years from the end of the year of the last entry" in said
    with factory() as s:
        assert s.get(Patient, patient.id).family_name == "Kowalski"
    [refused] = audit_records(factory, "privacy.erasure_refused")
    assert refused.outcome == "refused" and refused.patient_id == patient.id
    assert refused.actor_username == "medical-director" and refused.actor_role == "medical_director"
    # The reason may name the patient, and the log can never be anonymised.
    assert json.loads(refused.detail) == {
        "reason_length": len(REASON),
        "keep_until": f"{date.today().year + 20}-12-31",
    }
    assert audit_records(factory, "privacy.anonymised") == []


def test_anonymise_after_retention_removes_the_identity_keeps_clinical_data_and_the_chain(
    cli, factory, patient
):
    """ASVS 5.0 V14.2.x: after the retention period the identity can be anonymised."""
    last_seen_years_ago(factory, patient.id, 22)
    scanned = "]C0" + patient.mrn.lower() + "\r\n"  # as a barcode scanner types it
    result = cli("anonymise", "--patient", scanned, "--reason", REASON, "--as", "medical-director")
    assert result.exit_code == 0, result.output
    assert "identity was anonymised" in squeeze(result.output)
    with factory() as s:
        anonymised = s.get(Patient, patient.id)
        amendment = s.scalars(select(PatientAmendment)).one()
    assert anonymised.family_name == anonymised.given_name == "[anonymised]"
    assert anonymised.national_id is None and anonymised.phone is None
    assert anonymised.date_of_birth == date(1944, 1, 1) and anonymised.mrn == patient.mrn
    assert amendment.old_value == amendment.new_value == "[anonymised]"
    [done] = audit_records(factory, "privacy.anonymised")
    assert done.actor_username == "medical-director" and done.patient_id == patient.id
    assert json.loads(done.detail) == {"reason_length": len(REASON)}
    assert amendment.reason == "[anonymised]"
    assert audit_records(factory, "privacy.erasure_refused") == []

    from regenspine.cli import app

    verified = CliRunner().invoke(app, ["audit", "verify"])
    assert verified.exit_code == 0, verified.output


def test_anonymise_as_a_role_without_the_right_is_refused_recorded_and_changes_nothing(
    cli, factory, patient
):
    """ASVS 5.0 V8.2.1, V8.2.x (refusals audited): only roles with privacy:manage may act."""
    last_seen_years_ago(factory, patient.id, 22)
    result = cli("anonymise", "--patient", patient.mrn, "--reason", REASON, "--as", "doctor")
    assert result.exit_code == 1, result.output
    assert "does not allow you to handle patients' data-rights requests (privacy:manage)" in (
        squeeze(result.output)
    )
    [denied] = audit_records(factory, "permission.denied")
    assert denied.actor_username == "doctor" and denied.outcome == "refused"
    assert audit_records(factory, "privacy.anonymised") == []
    with factory() as s:
        assert s.get(Patient, patient.id).family_name == "Kowalski"

    unknown = cli("anonymise", "--patient", patient.mrn, "--reason", REASON, "--as", "nobody")
    assert unknown.exit_code == 1 and "This account does not exist." in unknown.output
    short = cli("anonymise", "--patient", patient.mrn, "--reason", "no", "--as", "medical-director")
    assert short.exit_code == 2 and "Give the reason" in short.output
    wrong_check = patient.mrn[:-1] + ("A" if patient.mrn[-1] != "A" else "B")
    mistyped = cli("anonymise", "--patient", wrong_check, "--reason", REASON)
    assert mistyped.exit_code == 1 and "There is no patient with this number." in mistyped.output
    with factory() as s:
        assert s.get(Patient, patient.id).family_name == "Kowalski"


def test_export_writes_everything_held_as_json_and_pdf_and_each_export_is_audited(
    cli, factory, patient, tmp_path
):
    """ASVS 5.0 V14.2.x (the patient's access request), V16.x (the export is audited)."""
    out = tmp_path / "access.json"
    result = cli("export", "--patient", patient.mrn, "--out", str(out), "--as", "medical-director")
    assert result.exit_code == 0, result.output
    export = json.loads(out.read_text(encoding="utf-8"))
    assert export["patient"]["national_id"] == "44051401458"
    assert export["patient"]["mrn"] == patient.mrn
    assert [a["field"] for a in export["amendments"]] == ["phone"]
    readers = {(a["who"], a["action"]) for a in export["record_accesses"]}
    assert ("doctor", "patient.read") in readers and ("coordinator", "patient.create") in readers
    assert stat.S_IMODE(out.stat().st_mode) == 0o600

    again = cli("export", "--patient", patient.mrn, "--out", str(out))
    assert again.exit_code == 2 and "already exists" in squeeze(again.output)

    pdf = tmp_path / "access.pdf"
    result = cli("export", "--patient", patient.mrn, "--out", str(pdf), "--pdf", "--lang", "en")
    assert result.exit_code == 0, result.output
    content = pdf.read_bytes()
    assert content.startswith(b"%PDF-")
    text = "".join("".join(p.extract_text() for p in PdfReader(io.BytesIO(content)).pages).split())
    assert "Kowalski" in text and "Whoaccessedyourrecord" in text

    exports = audit_records(factory, "privacy.access_export")
    assert [(r.actor_username, r.patient_id) for r in exports] == [
        ("medical-director", patient.id),
        ("system", patient.id),
    ]


def test_export_as_a_role_without_the_right_writes_nothing_and_is_recorded(
    cli, factory, patient, tmp_path
):
    """ASVS 5.0 V8.2.1, V8.2.x."""
    out = tmp_path / "access.json"
    result = cli("export", "--patient", patient.mrn, "--out", str(out), "--as", "auditor")
    assert result.exit_code == 1, result.output
    assert not out.exists()
    [denied] = audit_records(factory, "permission.denied")
    assert denied.actor_username == "auditor"
    assert audit_records(factory, "privacy.access_export") == []
