"""The clinical pathway end to end through the API, on both databases: assessment, red flags,
eligibility with every reason, override, consent and withdrawal, and the refusals."""

from __future__ import annotations

import html
import json

import pytest
from sqlalchemy import func, select

from regenspine.audit.models import AuditRecord
from regenspine.auth.permissions import Role
from regenspine.consultations.models import Consultation
from regenspine.consultations.rules import BOOLEANS
from regenspine.eligibility.models import EligibilityDecision, RedFlagScreening
from regenspine.eligibility.red_flags import items_for_region
from regenspine.episodes.models import Consent, Episode, EpisodeEvent
from regenspine.episodes.states import OWN_FORM_STEPS, Step
from tests.conftest import audit_count, open_lumbar_episode

NAME = "Jan Kowalski"


def no_red_flags(region: str = "lumbar") -> dict[str, bool]:
    return {item.id: False for item in items_for_region(region)}


def good_consultation(**overrides):
    data = {
        "presenting_complaint": "Low back pain radiating to the left buttock for a year",
        "pain_weeks": 52,
        "physiotherapy_weeks": 12,
        "prior_treatments": "NSAIDs, physiotherapy",
        "prior_fusion_levels": [],
        "medications": "ibuprofen as needed",
        "bmi": 26.5,
        "imaging_modality": "mri",
        "imaging_date": "2026-10-01",
        "level_findings": {
            "L4-L5": {
                "pfirrmann": 3,
                "herniation": "protrusion",
                "annular_fissure": True,
                "modic": "none",
                "stenosis": "none",
                "disc_height_loss_percent": 20,
            }
        },
        "diagnoses": [{"condition": "disc_protrusion", "levels": ["L4-L5"], "side": None}],
        "target_levels": ["L4-L5"],
    } | {flag: False for flag in BOOLEANS}
    data.update(overrides)
    return data


@pytest.fixture
def episode(clients):
    return open_lumbar_episode(clients)[1]


def assess(clients, episode_id, consultation=None, flags=None, role=Role.DOCTOR, **extra):
    body = {
        "consultation": consultation or good_consultation(),
        "red_flags": flags if flags is not None else no_red_flags(),
        **extra,
    }
    # json.dumps escapes as a client in another language may: a lone surrogate travels.
    return clients(role).post(
        f"/api/v1/episodes/{episode_id}/assessment",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
    )


def state(clients, episode_id) -> str:
    return clients(Role.DOCTOR).get(f"/api/v1/episodes/{episode_id}").json()["state"]


def test_a_suitable_patient_goes_from_referral_to_consented(clients, episode, factory):
    r = assess(clients, episode)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["episode_state"] == "eligible"
    assert body["decision"]["decision"] == "eligible"
    assert body["decision"]["ruleset_version"]
    assert body["decision"]["inputs"]["target_levels"] == ["L4-L5"]
    consent = clients(Role.COORDINATOR).post(
        f"/episodes/{episode}/consent",
        data={
            "method": "tablet_signature",
            "signed_name": NAME,
            "confirmed": "yes",
            "language": "pl",
        },
        follow_redirects=False,
    )
    assert consent.status_code == 303, consent.text
    assert state(clients, episode) == "consented"
    with factory() as s:
        stored = s.scalars(select(Consent)).one()
    assert stored.levels == ["L4-L5"] and stored.document_version == 1
    assert len(stored.document_hash) == 64 and stored.explained_by_name == "Test Coordinator"
    timeline = clients(Role.DOCTOR).get(f"/api/v1/episodes/{episode}").json()["events"]
    assert [e["to_state"] for e in timeline] == ["referred", "assessed", "eligible", "consented"]


def test_a_cauda_equina_flag_sends_the_patient_to_urgent_referral_and_blocks_everything(
    clients, episode
):
    flags = no_red_flags()
    cauda = next(i.id for i in items_for_region("lumbar") if i.category == "cauda_equina")
    flags[cauda] = True
    r = assess(clients, episode, flags=flags)
    assert r.status_code == 201, r.text
    assert r.json()["episode_state"] == "urgent_referral"
    assert r.json()["red_flags_positive"] == [cauda]
    work = clients(Role.MEDICAL_DIRECTOR).get("/api/v1/worklist").json()
    assert work[0]["urgent"] is True and work[0]["episode"]["id"] == episode
    refused = clients(Role.DOCTOR).post(
        f"/api/v1/episodes/{episode}/override", json={"justification": "x" * 60}
    )
    assert refused.status_code in (404, 409)
    consent = clients(Role.COORDINATOR).post(
        f"/episodes/{episode}/consent",
        data={
            "method": "tablet_signature",
            "signed_name": NAME,
            "confirmed": "yes",
            "language": "pl",
        },
    )
    assert consent.status_code == 409
    assert state(clients, episode) == "urgent_referral"


def test_clearing_a_red_flag_needs_a_documented_reassessment(clients, episode):
    flags = no_red_flags()
    flags[next(iter(flags))] = True
    assess(clients, episode, flags=flags)
    short = clients(Role.DOCTOR).post(
        f"/api/v1/episodes/{episode}/red-flag-clearance", json={"note": "ok"}
    )
    assert short.status_code == 422
    ok = clients(Role.DOCTOR).post(
        f"/api/v1/episodes/{episode}/red-flag-clearance",
        json={"note": "Reassessed in clinic: no saddle anaesthesia, bladder normal, MRI reviewed."},
    )
    assert ok.status_code == 204
    # The rules decide again on the consultation and the cleared screening.
    assert state(clients, episode) == "eligible"
    decision = clients(Role.DOCTOR).get(f"/api/v1/episodes/{episode}/decision").json()
    assert decision["decision"] == "eligible" and decision["red_flag"] is False


def test_not_eligible_lists_every_reason_and_a_doctor_can_override_with_justification(
    clients, episode, factory
):
    r = assess(clients, episode, good_consultation(active_infection=True, bmi=41))
    decision = r.json()["decision"]
    assert r.json()["episode_state"] == "not_eligible"
    outcomes = {f["outcome"] for f in decision["fired"]}
    assert {"exclude", "needs_review"} <= outcomes
    too_short = clients(Role.DOCTOR).post(
        f"/api/v1/episodes/{episode}/override", json={"justification": "I think it is fine"}
    )
    assert too_short.status_code == 422
    nurse = clients(Role.NURSE).post(
        f"/api/v1/episodes/{episode}/override", json={"justification": "x" * 40}
    )
    assert nurse.status_code == 403
    justification = "Infection treated and resolved; CRP normal on 2026-11-20, reviewed by ID."
    ok = clients(Role.DOCTOR).post(
        f"/api/v1/episodes/{episode}/override", json={"justification": justification}
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["override_justification"] == justification
    assert state(clients, episode) == "eligible"
    with factory() as s:
        assert (
            s.scalar(
                select(func.count(AuditRecord.id)).where(
                    AuditRecord.action == "eligibility.override"
                )
            )
            == 1
        )


def test_changing_the_consultation_re_evaluates_and_keeps_the_history(clients, episode):
    assess(clients, episode)
    assert state(clients, episode) == "eligible"
    without_reason = assess(clients, episode, good_consultation(pregnancy=True))
    assert without_reason.status_code == 422
    changed = assess(
        clients,
        episode,
        good_consultation(pregnancy=True),
        change_reason="Pregnancy test positive at pre-procedure check",
    )
    assert changed.status_code == 201
    assert changed.json()["consultation_version"] == 2
    assert changed.json()["episode_state"] == "not_eligible"


@pytest.mark.parametrize(
    ("consultation", "field"),
    [
        (good_consultation(level_findings={"C5-C6": {"pfirrmann": 3}}), "level_findings.C5-C6"),
        (
            good_consultation(diagnoses=[{"condition": "disc_protrusion", "levels": ["C5-C6"]}]),
            "diagnoses.0",
        ),
        (good_consultation(target_levels=["T12-L1", "L9-L10"]), "target_levels"),
        (good_consultation(diagnoses=[{"condition": "sciatica", "levels": []}]), "diagnoses.0"),
        (good_consultation(bmi=400), "bmi"),
    ],
)
def test_a_consultation_with_a_level_outside_the_region_is_refused_and_stores_nothing(
    clients, episode, consultation, field
):
    r = assess(clients, episode, consultation)
    assert r.status_code == 422
    assert field in r.json()["errors"]
    assert state(clients, episode) == "referred"


def test_incomplete_red_flag_screening_is_refused(clients, episode):
    flags = no_red_flags()
    flags.pop(next(iter(flags)))
    r = assess(clients, episode, flags=flags)
    assert r.status_code == 422
    assert state(clients, episode) == "referred"


def test_an_unknown_rule_set_version_is_refused(clients, episode):
    r = assess(clients, episode, ruleset_version="1999.1.1")
    assert r.status_code == 422
    assert "1999.1.1" in r.json()["errors"]["ruleset_version"]
    assert state(clients, episode) == "referred"


TABLET_CONSENT = {
    "method": "tablet_signature",
    "signed_name": NAME,
    "confirmed": "yes",
    "language": "en",
}


def _consented(clients, episode):
    assess(clients, episode)
    r = clients(Role.COORDINATOR).post(
        f"/episodes/{episode}/consent",
        data=TABLET_CONSENT,
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text


def test_withdrawn_consent_stops_the_pathway_before_the_next_step(clients, episode):
    _consented(clients, episode)
    r = clients(Role.COORDINATOR).post(
        f"/episodes/{episode}/consent/withdraw",
        data={"reason": "Patient changed their mind"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert state(clients, episode) == "eligible"
    schedule = clients(Role.COORDINATOR).post(
        f"/api/v1/episodes/{episode}/steps", json={"step": "consent", "target": "consented"}
    )
    assert schedule.status_code == 409
    assert "consent" in schedule.json()["detail"]


@pytest.mark.parametrize(
    ("step", "target", "role"),
    [
        ("withdraw_consent", "eligible", Role.COORDINATOR),
        ("consent", "consented", Role.COORDINATOR),
        ("override", "eligible", Role.DOCTOR),
        ("evaluate", "not_eligible", Role.DOCTOR),
        ("flag_red", "urgent_referral", Role.DOCTOR),
    ],
)
def test_a_step_with_a_form_of_its_own_cannot_be_taken_as_a_bare_step(
    clients, episode, factory, step, target, role
):
    """Withdrawing consent as a bare step once moved the episode back to "eligible" while the
    consent stayed valid, so a bare "consent" step reused it for levels the patient never agreed
    to. Both endpoints now refuse every step whose own form records what it stands for."""
    _consented(clients, episode)
    with factory() as s:
        before = s.scalar(select(func.max(AuditRecord.id)))
    body = {"step": step, "target": target, "reason": "Patient said so on the phone"}
    api = clients(role).post(f"/api/v1/episodes/{episode}/steps", json=body)
    assert api.status_code == 409, api.text
    assert api.json()["detail"] == OWN_FORM_STEPS[Step(step)]
    page = clients(role).post(f"/episodes/{episode}/steps", data=body, follow_redirects=False)
    assert page.status_code == 409, page.text
    assert OWN_FORM_STEPS[Step(step)] in html.unescape(page.text)
    with factory() as s:
        added = s.scalars(select(AuditRecord).where(AuditRecord.id > before)).all()
        refusals = [json.loads(r.detail) for r in added if r.action == "episode.step_refused"]
        assert [(d["step"], d["reason"]) for d in refusals] == [(step, "own_form")] * 2
        # The page shows the episode again with the refusal; nothing else was recorded.
        assert {r.action for r in added} == {"episode.step_refused", "episode.read"}
        assert s.scalars(select(Consent)).one().withdrawn_at is None
    assert state(clients, episode) == "consented"


def test_a_consent_for_other_levels_does_not_cover_the_procedure_day(clients, episode, factory):
    """Defence in depth: should the targeted levels ever differ from the consented ones, no
    procedure step may follow until the patient consents to the new levels."""
    _consented(clients, episode)
    _newer_consultation_behind_the_decision(factory, target_levels=["L3-L4"])
    r = clients(Role.COORDINATOR).post(
        f"/api/v1/episodes/{episode}/steps", json={"step": "schedule", "target": "scheduled"}
    )
    assert r.status_code == 409, r.text
    assert "consent covers L4-L5, but the assessment now targets L3-L4" in r.json()["detail"]
    assert state(clients, episode) == "consented"


@pytest.mark.parametrize(
    ("form", "words"),
    [
        ({"signed_name": "Someone Else", "confirmed": "yes"}, "own full name"),
        ({"signed_name": NAME}, "confirm every statement"),
    ],
)
def test_consent_without_the_patients_own_name_or_confirmation_is_refused(
    clients, episode, factory, form, words
):
    assess(clients, episode)
    r = clients(Role.COORDINATOR).post(
        f"/episodes/{episode}/consent", data={"method": "tablet_signature", "language": "pl"} | form
    )
    assert r.status_code == 422
    assert words in r.text
    with factory() as s:
        assert s.scalar(select(func.count(Consent.id))) == 0


def test_a_scanned_consent_must_really_be_a_pdf_or_an_image(clients, episode, factory):
    assess(clients, episode)
    base = {"method": "scanned_form", "signed_name": "", "confirmed": "yes", "language": "pl"}
    fake = clients(Role.COORDINATOR).post(
        f"/episodes/{episode}/consent",
        data=base,
        files={"scan": ("consent.pdf", b"MZ\x90\x00 this is an executable", "application/pdf")},
    )
    assert fake.status_code == 422, fake.text
    assert "not a PDF" in fake.text, fake.text[fake.text.find("alert") :][:300]
    real = clients(Role.COORDINATOR).post(
        f"/episodes/{episode}/consent",
        data=base,
        files={"scan": ("consent.pdf", b"%PDF-1.7\n%signed form\n", "application/pdf")},
        follow_redirects=False,
    )
    assert real.status_code == 303, real.text
    with factory() as s:
        stored = s.scalars(select(Consent)).one()
    assert stored.scan_content_type == "application/pdf" and stored.scan_sha256


def squeeze(text: str) -> str:
    return "".join(text.split())


def _pdf_text_and_pages(content: bytes, tmp_path) -> tuple[str, int]:
    """Extracts the text and renders every page to PNG, as a reader's viewer would."""
    import io
    import shutil
    import subprocess

    from pypdf import PdfReader

    from tests.conftest import skip_or_fail

    assert content.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(content))
    text = "\n".join(page.extract_text() for page in reader.pages)
    if shutil.which("pdftoppm") is None:
        skip_or_fail("pdftoppm (poppler-utils) is not installed")
    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(content)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "50", str(pdf), str(tmp_path / "page")], check=True, timeout=60
    )
    pages = sorted(tmp_path.glob("page-*.png"))
    assert all(p.stat().st_size > 1000 for p in pages)
    return text, len(pages)


def test_the_urgent_referral_letter_lists_the_positive_findings(clients, episode, tmp_path):
    flags = no_red_flags()
    cauda = next(i for i in items_for_region("lumbar") if i.category == "cauda_equina")
    flags[cauda.id] = True
    assess(clients, episode, flags=flags)
    r = clients(Role.DOCTOR).get(f"/api/v1/episodes/{episode}/urgent-referral.pdf?lang=en")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    text, pages = _pdf_text_and_pages(r.content, tmp_path)
    assert pages >= 1
    flat = squeeze(text)  # PDF text extraction splits words at kerning ("T est")
    assert squeeze("KOWALSKI, Jan") in flat
    assert squeeze(cauda.question.en) in flat
    page = clients(Role.DOCTOR).get(f"/episodes/{episode}/urgent-referral.pdf")
    assert page.status_code == 200 and page.content.startswith(b"%PDF-")


def test_there_is_no_referral_letter_without_a_red_flag(clients, episode):
    assess(clients, episode)
    r = clients(Role.DOCTOR).get(f"/api/v1/episodes/{episode}/urgent-referral.pdf")
    assert r.status_code == 409


def test_the_signed_consent_prints_the_exact_text_with_its_risks_and_signature(
    clients, episode, tmp_path
):
    _consented(clients, episode)
    r = clients(Role.COORDINATOR).get(f"/episodes/{episode}/consent.pdf")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    text, pages = _pdf_text_and_pages(r.content, tmp_path)
    flat = squeeze(text)
    assert pages >= 2
    assert squeeze(NAME) in flat and "L4-L5" in flat and squeeze("Test Coordinator") in flat
    from regenspine.consent.documents import current_document

    doc = current_document().render("en", ["L4-L5"], "lumbar")
    for risk in doc.risks:
        assert squeeze(risk.title) in flat, risk.id


def _without(key):
    data = good_consultation()
    del data[key]
    return data


def _finding(**changes):
    return good_consultation(
        level_findings={"L4-L5": good_consultation()["level_findings"]["L4-L5"] | changes}
    )


@pytest.mark.parametrize(
    ("consultation", "field", "words"),
    [
        # A contraindication is answered, never assumed "no".
        (good_consultation(anticoagulant="Y"), "anticoagulant", "yes or no"),
        (good_consultation(active_infection="tak"), "active_infection", "yes or no"),
        (good_consultation(pregnancy=" yes"), "pregnancy", "yes or no"),
        (good_consultation(active_malignancy="positive"), "active_malignancy", "yes or no"),
        (_without("bleeding_disorder"), "bleeding_disorder", "yes or no"),
        (_finding(annular_fissure="false"), "level_findings.L4-L5", "yes or no"),
        # Numbers are not cut, rounded or taken from truth values.
        (_finding(pfirrmann=3.9), "level_findings.L4-L5", "whole number"),
        (good_consultation(pain_weeks=12.9), "pain_weeks", "whole number"),
        (good_consultation(pain_weeks=True), "pain_weeks", "whole number"),
        (good_consultation(bmi=True), "bmi", "number"),
        (good_consultation(imaging_date="0001-01-01"), "imaging_date", "1900-01-01"),
        (good_consultation(imaging_date=20260101), "imaging_date", "YYYY-MM-DD"),
        (good_consultation(presenting_complaint={"a": 1}), "presenting_complaint", "text"),
        # Text that no database can store is refused with words, not a server error.
        (good_consultation(presenting_complaint="back\x00pain"), "presenting_complaint", "control"),
        (good_consultation(medications="ibu\ud800profen"), "medications", "control"),
        (good_consultation(target_levels=["\ud800"]), "target_levels", "is not a lumbar"),
        (good_consultation(level_findings={"L\ud8004": {}}), "level_findings.?", "is not a"),
    ],
)
def test_an_assessment_with_a_value_of_the_wrong_kind_is_refused_and_nothing_is_stored(
    clients, episode, factory, consultation, field, words
):
    r = assess(clients, episode, consultation=consultation)
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    key = next(k for k in errors if k.endswith(field))
    assert words in errors[key]
    assert state(clients, episode) == "referred"
    with factory() as s:
        assert s.scalar(select(func.count(Consultation.id))) == 0


@pytest.mark.parametrize("literal", ["1e309", "-1e309", "Infinity", "NaN"])
def test_a_number_beyond_any_float_is_refused_not_a_server_error(clients, episode, literal):
    body = json.dumps(
        {"consultation": good_consultation(pain_weeks=0), "red_flags": no_red_flags()}
    )
    r = clients(Role.DOCTOR).post(
        f"/api/v1/episodes/{episode}/assessment",
        content=body.replace('"pain_weeks": 0', f'"pain_weeks": {literal}'),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert "whole number" in next(v for k, v in r.json()["errors"].items() if "pain_weeks" in k)


def test_text_longer_than_the_record_holds_is_refused_on_every_pathway_form(
    clients, episode, factory
):
    """A 20,000-character signed name fitted no column on PostgreSQL (a server error), and
    reasons of 200,000 characters were stored whole. The forms now hold what the API holds."""
    assess(clients, episode)
    coordinator = clients(Role.COORDINATOR)
    scanned = coordinator.post(
        f"/episodes/{episode}/consent",
        data={
            "method": "scanned_form",
            "signed_name": "=HYPERLINK(" + "x" * 20_000,
            "confirmed": "yes",
            "language": "pl",
        },
        files={"scan": ("consent.pdf", b"%PDF-1.4 signed form", "application/pdf")},
    )
    assert scanned.status_code == 422 and "at most 200 characters" in scanned.text
    _consented(clients, episode)
    withdrawn = coordinator.post(
        f"/episodes/{episode}/consent/withdraw", data={"reason": "w" * 200_001}
    )
    assert withdrawn.status_code == 422 and "at most 2000 characters" in withdrawn.text
    cancelled = coordinator.post(
        f"/episodes/{episode}/steps",
        data={"step": "cancel", "target": "cancelled", "reason": "c" * 300_000},
    )
    assert cancelled.status_code == 422 and "at most 2000 characters" in cancelled.text
    assert state(clients, episode) == "consented"
    with factory() as s:
        [consent] = s.scalars(select(Consent)).all()
        assert consent.withdrawn_at is None and len(consent.signed_name) < 200


RTL_OVERRIDE, ISOLATE, ZERO_WIDTH, HANGUL_FILLER = "\u202e", "\u2066", "\u200b", "\u3164"


@pytest.mark.parametrize(
    "signed_name",
    [
        RTL_OVERRIDE + "ikswolwoK naJ",
        ZERO_WIDTH * 3,
        "Jan" + ZERO_WIDTH + "Kowalski",
        HANGUL_FILLER * 3,  # a letter to Unicode that shows as nothing
        "Jan" + HANGUL_FILLER + "Kowalski",
    ],
)
def test_a_signer_name_with_invisible_characters_is_refused_and_nothing_is_stored(
    clients, episode, factory, signed_name
):
    """A right-to-left override showed a scanned form's signer as a name it is not, next to the
    date; a name of zero-width spaces was kept as the signer."""
    assess(clients, episode)
    r = clients(Role.COORDINATOR).post(
        f"/episodes/{episode}/consent",
        data={
            "method": "scanned_form",
            "signed_name": signed_name,
            "confirmed": "yes",
            "language": "en",
        },
        files={"scan": ("consent.pdf", b"%PDF-1.4 signed form", "application/pdf")},
    )
    assert r.status_code == 422, r.text[:300]
    assert "without invisible characters" in r.text
    with factory() as s:
        assert s.scalar(select(func.count(Consent.id))) == 0


def test_a_consultation_changed_with_a_reason_that_would_show_reordered_is_refused(
    clients, episode, factory
):
    assess(clients, episode)
    r = assess(
        clients,
        episode,
        good_consultation(pain_weeks=60),
        change_reason="Imaging " + RTL_OVERRIDE + "deweiver",
    )
    assert r.status_code == 422, r.text
    assert "change the order" in r.json()["errors"]["change_reason"]
    with factory() as s:
        assert s.scalars(select(Consultation.pain_weeks)).all() == [52]


def test_reasons_and_notes_that_would_show_their_words_reordered_are_refused(
    clients, episode, factory
):
    flags = no_red_flags()
    flags[next(iter(flags))] = True
    assess(clients, episode, flags=flags)
    doctor = clients(Role.DOCTOR)
    note = doctor.post(
        f"/api/v1/episodes/{episode}/red-flag-clearance",
        json={"note": "Reassessed in clinic, MRI reviewed: " + RTL_OVERRIDE + "lamron reddalb"},
    )
    assert note.status_code == 422 and "change the order" in note.json()["errors"]["note"]
    assert state(clients, episode) == "urgent_referral"
    doctor.post(f"/api/v1/episodes/{episode}/red-flag-clearance", json={"note": CLEARANCE})
    assess(clients, episode, change_reason="Reassessed after the clearance")
    _consented(clients, episode)
    coordinator = clients(Role.COORDINATOR)
    withdrawn = coordinator.post(
        f"/episodes/{episode}/consent/withdraw", data={"reason": ISOLATE + "Moved abroad"}
    )
    assert withdrawn.status_code == 422 and "change the order" in html.unescape(withdrawn.text)
    cancelled = coordinator.post(
        f"/api/v1/episodes/{episode}/steps",
        json={
            "step": "cancel",
            "target": "cancelled",
            "reason": "Moved " + RTL_OVERRIDE + "abroad",
        },
    )
    assert (
        cancelled.status_code == 422 and "change the order" in cancelled.json()["errors"]["reason"]
    )
    assert state(clients, episode) == "consented"
    with factory() as s:
        assert s.scalars(select(Consent)).one().withdrawn_at is None


# --- a cycle treats once ----------------------------------------------------------------------

CLEARANCE = "Reassessed in clinic: no saddle anaesthesia, bladder normal, MRI reviewed."
PROCEDURE_DAY = [
    (Role.COORDINATOR, "schedule", "scheduled"),
    (Role.DOCTOR, "harvest", "harvested"),
    (Role.LAB_TECHNICIAN, "process", "processed"),
    (Role.LAB_TECHNICIAN, "release", "released"),
    (Role.DOCTOR, "administer", "administered"),
    (Role.COORDINATOR, "start_follow_up", "follow_up"),
]


def _step(clients, role, episode, step, target):
    return clients(role).post(
        f"/api/v1/episodes/{episode}/steps", json={"step": step, "target": target}
    )


def _treated(clients, episode):
    """Consented, then the whole procedure day, then follow-up."""
    _consented(clients, episode)
    for role, step, target in PROCEDURE_DAY:
        r = _step(clients, role, episode, step, target)
        assert r.status_code == 201, (step, r.text)
    assert state(clients, episode) == "follow_up"


def _red_flag():
    flags = no_red_flags()
    flags[next(iter(flags))] = True
    return flags


def _events(factory, episode):
    with factory() as s:
        return [
            (e.step, e.cycle)
            for e in s.scalars(select(EpisodeEvent).where(EpisodeEvent.episode_id == episode))
        ]


def test_a_red_flag_cleared_after_the_injection_returns_the_episode_to_its_follow_up(
    clients, episode, factory
):
    """A cycle treats once. A red flag found at follow-up and cleared used to send the episode
    back to assessment and on to a second procedure day in the same cycle, past the limit of
    cycles. It now returns to follow-up; another treatment needs another cycle."""
    _treated(clients, episode)
    found = assess(clients, episode, flags=_red_flag(), change_reason="New symptom at follow-up")
    assert found.status_code == 201, found.text
    assert state(clients, episode) == "urgent_referral"
    cleared = clients(Role.DOCTOR).post(
        f"/api/v1/episodes/{episode}/red-flag-clearance", json={"note": CLEARANCE}
    )
    assert cleared.status_code == 204, cleared.text
    assert state(clients, episode) == "follow_up"
    again = _step(clients, Role.COORDINATOR, episode, "schedule", "scheduled")
    assert again.status_code == 409
    assert [e for e in _events(factory, episode) if e[0] == "administer"] == [("administer", 1)]


def test_the_procedure_day_of_a_cycle_cannot_be_repeated_even_if_the_state_allowed_it(
    clients, episode, factory
):
    """Defence in depth: should an episode ever stand before its procedure day again in a cycle
    that already had one, scheduling and harvesting are refused with the reason."""
    _treated(clients, episode)
    with factory() as s:
        s.get(Episode, episode).state = "consented"
        s.commit()
    r = _step(clients, Role.COORDINATOR, episode, "schedule", "scheduled")
    assert r.status_code == 409, r.text
    assert "Cycle 1 already had its procedure day" in r.json()["detail"]
    with factory() as s:
        s.get(Episode, episode).state = "released"
        s.commit()
    r = _step(clients, Role.DOCTOR, episode, "administer", "administered")
    assert r.status_code == 409, r.text
    assert [e for e in _events(factory, episode) if e[0] in ("harvest", "administer")] == [
        ("harvest", 1),
        ("administer", 1),
    ]


def test_another_cycle_needs_the_latest_assessment_to_find_the_patient_eligible(
    clients, episode, factory
):
    _treated(clients, episode)
    review = assess(
        clients,
        episode,
        good_consultation(active_infection=True),
        change_reason="Follow-up review: active infection found",
    )
    assert review.status_code == 201, review.text
    assert review.json()["decision"]["decision"] == "not_eligible"
    r = _step(clients, Role.DOCTOR, episode, "new_cycle", "eligible")
    assert r.status_code == 409, r.text
    assert "latest assessment to find the patient eligible" in r.json()["detail"]
    assert state(clients, episode) == "follow_up"
    assert ("new_cycle", 1) not in _events(factory, episode)


def test_another_cycle_is_refused_on_a_decision_older_than_a_review_that_found_a_red_flag(
    clients, episode, factory
):
    """A review that finds a red flag makes no decision. Once the flag was cleared, the first
    cycle's "eligible" still stood as the latest decision and started a second cycle past the
    active infection the same review recorded. A new cycle now needs a decision taken on the
    newest consultation and screening."""
    _treated(clients, episode)
    review = assess(
        clients,
        episode,
        good_consultation(active_infection=True),
        flags=_red_flag(),
        change_reason="Follow-up review: fever and a new symptom",
    )
    assert review.status_code == 201, review.text
    assert review.json()["decision"] is None
    cleared = clients(Role.DOCTOR).post(
        f"/api/v1/episodes/{episode}/red-flag-clearance", json={"note": CLEARANCE}
    )
    assert cleared.status_code == 204, cleared.text
    assert state(clients, episode) == "follow_up"

    r = _step(clients, Role.DOCTOR, episode, "new_cycle", "eligible")
    assert r.status_code == 409, r.text
    assert "latest assessment to find the patient eligible" in r.json()["detail"]
    assert state(clients, episode) == "follow_up"
    assert ("new_cycle", 1) not in _events(factory, episode)
    with factory() as s:
        refusals = s.scalars(
            select(AuditRecord.detail).where(
                AuditRecord.action == "episode.step_refused",
                AuditRecord.entity_id == str(episode),
            )
        ).all()
    assert any(json.loads(d).get("step") == "new_cycle" for d in refusals), refusals

    # The doctor's fresh assessment decides again, on what the review found.
    again = assess(
        clients,
        episode,
        good_consultation(active_infection=True),
        change_reason="Reassessed after the red flag was cleared",
    )
    assert again.json()["decision"]["decision"] == "not_eligible"
    r = _step(clients, Role.DOCTOR, episode, "new_cycle", "eligible")
    assert r.status_code == 409, r.text


def test_a_doctor_overrides_a_follow_up_reviews_decision_to_start_another_cycle(
    clients, episode, factory
):
    """The refusal of another cycle offers "a doctor's override", and the override could not be
    made at follow-up (the pathway allowed it only before treatment). It is now made in place:
    the episode stays in follow-up, and the new cycle follows on the overridden decision."""
    _treated(clients, episode)
    review = assess(
        clients,
        episode,
        good_consultation(pain_weeks=4, physiotherapy_weeks=0),
        change_reason="Follow-up review at 3 months",
    )
    assert review.status_code == 201, review.text
    assert review.json()["decision"]["decision"] != "eligible"
    refused = _step(clients, Role.DOCTOR, episode, "new_cycle", "eligible")
    assert refused.status_code == 409, refused.text

    nurse = clients(Role.NURSE).post(
        f"/api/v1/episodes/{episode}/override", json={"justification": JUSTIFICATION}
    )
    assert nurse.status_code == 403, nurse.text
    overridden = clients(Role.DOCTOR).post(
        f"/api/v1/episodes/{episode}/override", json={"justification": JUSTIFICATION}
    )
    assert overridden.status_code == 201, overridden.text
    assert overridden.json()["overridden_by_name"]
    assert state(clients, episode) == "follow_up"
    assert ("override", 1) in _events(factory, episode)

    r = _step(clients, Role.DOCTOR, episode, "new_cycle", "eligible")
    assert r.status_code == 201, r.text
    assert state(clients, episode) == "eligible"
    assert ("new_cycle", 2) in _events(factory, episode)


JUSTIFICATION = "Seen in person: pain is returning at the treated level; a second cycle is fair."


def test_another_cycle_follows_a_review_made_after_this_cycles_injection(clients, episode, factory):
    """The first cycle's decision, taken before its injection, started a second cycle seconds
    after follow-up began: no review, no new consultation or screening. Another cycle now
    needs the follow-up assessment recorded after the injection."""
    _treated(clients, episode)
    r = _step(clients, Role.DOCTOR, episode, "new_cycle", "eligible")
    assert r.status_code == 409, r.text
    assert "record the follow-up assessment made after cycle 1's injection" in r.json()["detail"]
    assert state(clients, episode) == "follow_up"

    review = assess(clients, episode, change_reason="Follow-up review at three months")
    assert review.json()["decision"]["decision"] == "eligible"
    r = _step(clients, Role.DOCTOR, episode, "new_cycle", "eligible")
    assert r.status_code == 201, r.text
    assert ("new_cycle", 2) in _events(factory, episode)


def test_a_red_flag_assessment_is_what_the_rules_decide_on_once_the_flag_is_cleared(
    clients, episode, factory
):
    """A decision of "needs review", then an assessment that found a red flag (no decision),
    then one in urgent referral recording an infection and other levels: once the flag was
    cleared, the first decision could be overridden, consented and treated at levels no
    decision had checked. Clearing now has the rules decide on the newest assessment."""
    first = assess(clients, episode, good_consultation(pain_weeks=4, physiotherapy_weeks=0))
    assert first.json()["decision"]["decision"] == "needs_review"
    flagged = assess(clients, episode, flags=_red_flag(), change_reason="New symptom reported")
    assert flagged.json()["decision"] is None
    worse = assess(
        clients,
        episode,
        good_consultation(active_infection=True, target_levels=["L3-L4"]),
        flags=_red_flag(),
        change_reason="Reassessed in urgent referral",
    )
    assert worse.status_code == 201, worse.text
    cleared = clients(Role.DOCTOR).post(
        f"/api/v1/episodes/{episode}/red-flag-clearance", json={"note": CLEARANCE}
    )
    assert cleared.status_code == 204, cleared.text

    decision = clients(Role.DOCTOR).get(f"/api/v1/episodes/{episode}/decision").json()
    assert decision["decision"] == "not_eligible"
    assert decision["inputs"]["active_infection"] is True
    assert decision["inputs"]["target_levels"] == ["L3-L4"]
    assert state(clients, episode) == "not_eligible"
    with factory() as s:
        latest = s.scalars(select(Consultation).order_by(Consultation.version.desc())).first()
        newest = s.scalars(select(EligibilityDecision).order_by(EligibilityDecision.id.desc()))
        assert newest.first().consultation_id == latest.id
        assert (
            s.scalars(
                select(RedFlagScreening)
                .where(RedFlagScreening.cleared_at.is_(None))
                .where(RedFlagScreening.any_positive.is_(True))
            ).all()
            == []
        )


def test_one_reassessment_clears_every_open_red_flag(clients, episode, factory):
    """Two assessments in a row that each found a red flag left two open flags; clearing
    cleared the newest only, found the other still open and refused, forever."""
    assess(clients, episode, flags=_red_flag())
    assess(clients, episode, flags=_red_flag(), change_reason="Seen again the next day")
    cleared = clients(Role.DOCTOR).post(
        f"/api/v1/episodes/{episode}/red-flag-clearance", json={"note": CLEARANCE}
    )
    assert cleared.status_code == 204, cleared.text
    assert state(clients, episode) == "eligible"
    with factory() as s:
        screenings = s.scalars(select(RedFlagScreening)).all()
    assert len(screenings) == 2
    assert all(f.cleared_at is not None and f.clearance_note == CLEARANCE for f in screenings)


def _newer_consultation_behind_the_decision(factory, **changes):
    """Defence in depth: a consultation no decision has seen, stored as only a fault could."""
    with factory() as s:
        latest = s.scalars(select(Consultation).order_by(Consultation.version.desc())).first()
        fields = {
            "episode_id": latest.episode_id,
            "version": latest.version + 1,
            "recorded_by": latest.recorded_by,
            "recorded_by_name": latest.recorded_by_name,
            "change_reason": "Imported from the referral letter",
            "presenting_complaint": latest.presenting_complaint,
            "prior_fusion_levels": [],
            "level_findings": {},
            "diagnoses": latest.diagnoses,
            "target_levels": latest.target_levels,
        }
        s.add(Consultation(**(fields | changes)))
        s.commit()


def test_a_decision_older_than_the_newest_consultation_is_neither_overridden_nor_acted_on(
    clients, episode, factory
):
    assess(clients, episode, good_consultation(pain_weeks=4, physiotherapy_weeks=0))
    _newer_consultation_behind_the_decision(factory, active_infection=True)
    r = clients(Role.DOCTOR).post(
        f"/api/v1/episodes/{episode}/override", json={"justification": JUSTIFICATION}
    )
    assert r.status_code == 409, r.text
    assert "before the newest consultation or red-flag screening" in r.json()["detail"]
    assert state(clients, episode) == "assessed"
    assert audit_count(factory, "eligibility.override_refused") == 1
    with factory() as s:
        assert s.scalars(select(EligibilityDecision.overridden_at)).all() == [None]


def test_consent_and_the_procedure_day_need_a_decision_on_the_newest_assessment(
    clients, episode, factory
):
    assess(clients, episode)
    _newer_consultation_behind_the_decision(factory, active_infection=True)
    consent = clients(Role.COORDINATOR).post(
        f"/episodes/{episode}/consent",
        data=TABLET_CONSENT,
    )
    assert consent.status_code == 409, consent.text[:300]
    assert "before the newest consultation" in html.unescape(consent.text)
    with factory() as s:
        assert s.scalars(select(Consent)).all() == []
    assert state(clients, episode) == "eligible"


def test_the_episode_page_shows_a_decision_older_than_the_newest_assessment_as_no_longer_counting(
    clients, episode
):
    """An assessment that found a red flag makes no decision; the page went on showing the
    earlier one, with its override and its rules, beside the red flag."""
    assess(clients, episode, good_consultation(pain_weeks=4, physiotherapy_weeks=0))
    page = clients(Role.DOCTOR).get(f"/episodes/{episode}").text
    assert "Rules that fired" in page and "Override eligibility" in page
    assess(clients, episode, flags=_red_flag(), change_reason="New symptom reported")
    page = html.unescape(clients(Role.DOCTOR).get(f"/episodes/{episode}").text)
    assert "the earlier one (needs the doctor's review) no longer counts" in page
    assert "Rules that fired" not in page
    assert "Override eligibility" not in page


def test_the_episode_page_offers_only_steps_that_can_be_taken_now(clients, episode, factory):
    """At the last cycle, or before a follow-up review, "Start another cycle" could only be
    refused; the page no longer offers it. The step itself is still refused with the reason."""
    _treated(clients, episode)
    page = clients(Role.DOCTOR).get(f"/episodes/{episode}").text
    assert "Close episode" in page
    assert "Start another cycle" not in page
    assess(clients, episode, change_reason="Follow-up review at three months")
    assert "Start another cycle" in clients(Role.DOCTOR).get(f"/episodes/{episode}").text
    with factory() as s:
        s.get(Episode, episode).max_cycles = 1
        s.commit()
    assert "Start another cycle" not in clients(Role.DOCTOR).get(f"/episodes/{episode}").text
    r = _step(clients, Role.DOCTOR, episode, "new_cycle", "eligible")
    assert r.status_code == 409 and "maximum of 1 treatment cycles" in r.json()["detail"]


def _refused_since(factory, before: int) -> list[tuple[str, dict]]:
    """The refused records written since `before`, each detail without its message's words."""
    with factory() as s:
        rows = s.execute(
            select(AuditRecord.action, AuditRecord.detail).where(
                AuditRecord.id > before, AuditRecord.outcome == "refused"
            )
        ).all()
    refused = []
    for action, raw in rows:
        detail = json.loads(raw) if isinstance(raw, str) else dict(raw)
        assert detail.pop("message"), (action, detail)
        refused.append((action, detail))
    return refused


def _last_audit_id(factory) -> int:
    with factory() as s:
        return s.scalar(select(func.max(AuditRecord.id))) or 0


def test_every_refusal_of_a_pathway_form_is_written_to_the_audit_log(clients, episode, factory):
    """Refusals of the pathway's own forms (override, clearance, consent, withdrawal,
    assessment, a page moved on meanwhile) answered 409 and left no audit record, unlike the
    generic steps' refusals."""
    doctor, coordinator = clients(Role.DOCTOR), clients(Role.COORDINATOR)
    attempts = [
        (
            "override without a decision",
            lambda: doctor.post(
                f"/api/v1/episodes/{episode}/override", json={"justification": JUSTIFICATION}
            ),
            "eligibility.override_refused",
        ),
        (
            "clearance without a red flag",
            lambda: doctor.post(
                f"/api/v1/episodes/{episode}/red-flag-clearance", json={"note": CLEARANCE}
            ),
            "episode.step_refused",
        ),
        (
            "withdrawal without a consent",
            lambda: coordinator.post(
                f"/episodes/{episode}/consent/withdraw", data={"reason": "Moved abroad"}
            ),
            "episode.step_refused",
        ),
        (
            "consent before eligibility",
            lambda: coordinator.post(f"/episodes/{episode}/consent", data=TABLET_CONSENT),
            "episode.step_refused",
        ),
    ]
    for label, attempt, action in attempts:
        before = _last_audit_id(factory)
        r = attempt()
        assert r.status_code == 409, (label, r.status_code, r.text[:200])
        assert [a for a, _ in _refused_since(factory, before)] == [action], label

    assess(clients, episode)
    before = _last_audit_id(factory)
    r = doctor.post(f"/api/v1/episodes/{episode}/override", json={"justification": JUSTIFICATION})
    assert r.status_code == 409
    assert [a for a, _ in _refused_since(factory, before)] == ["eligibility.override_refused"]

    _consented(clients, episode)
    before = _last_audit_id(factory)
    r = assess(clients, episode, change_reason="Another look at the imaging")
    assert r.status_code == 409
    assert _refused_since(factory, before) == [
        ("episode.step_refused", {"step": "assess", "state": "consented"})
    ]
    before = _last_audit_id(factory)
    r = coordinator.post(
        f"/episodes/{episode}/steps",
        data={"step": "schedule", "target": "scheduled", "expected_state": "eligible"},
    )
    assert r.status_code == 409
    assert _refused_since(factory, before) == [
        (
            "episode.step_refused",
            {"step": "schedule", "reason": "moved_meanwhile", "expected": "eligible"},
        )
    ]
    assert state(clients, episode) == "consented"


@pytest.mark.parametrize(
    ("history", "flag"),
    [
        ({"history_cancer": True}, "history_of_cancer"),
        ({"active_malignancy": True}, "history_of_cancer"),
        ({"immunosuppression": True}, "immunosuppression"),
        ({}, "immunosuppression"),  # the red flag says yes, the history no
    ],
)
def test_an_assessment_whose_history_contradicts_its_red_flag_answers_is_refused(
    clients, episode, factory, history, flag
):
    """ "History of cancer" ticked beside "no" to the red-flag question on cancer was saved as
    eligible; immunosuppression, asked twice, could be answered both ways."""
    flags = no_red_flags()
    flags[flag] = not history  # the opposite of what the history says
    r = assess(clients, episode, good_consultation(**history), flags=flags)
    assert r.status_code == 422, r.text
    assert "disagree about" in r.json()["errors"]["answers"]
    assert state(clients, episode) == "referred"
    with factory() as s:
        assert s.scalars(select(Consultation)).all() == []
        assert s.scalars(select(RedFlagScreening)).all() == []


def test_the_timeline_names_a_red_flag_in_words_not_by_its_code(clients, episode):
    flags = _red_flag()
    found = next(k for k, v in flags.items() if v)
    assess(clients, episode, flags=flags)
    page = html.unescape(clients(Role.DOCTOR).get(f"/episodes/{episode}").text)
    timeline = page[page.index('<ol class="timeline">') :]
    item = next(i for i in items_for_region("lumbar") if i.id == found)
    assert item.text("en") in timeline or item.text("pl") in timeline
    assert found not in timeline


def test_a_refused_episode_form_shows_again_what_was_typed(clients, episode):
    """A refusal on the episode page emptied the override's justification and the consent's
    typed name and tick; the language switch on that page led to an address that only takes
    forms (405)."""
    assess(clients, episode, good_consultation(pain_weeks=4, physiotherapy_weeks=0))
    doctor = clients(Role.DOCTOR)
    short = "Cardiologist agrees.         " + " " * 10  # 30 characters only with the spaces
    r = doctor.post(f"/episodes/{episode}/override", data={"justification": short})
    assert r.status_code == 422, r.text[:300]
    page = html.unescape(r.text)
    assert ">" + short + "</textarea>" in page
    assert 'name="next" value="/episodes/' + str(episode) + '"' in page

    doctor.post(f"/episodes/{episode}/override", data={"justification": JUSTIFICATION})
    r = clients(Role.COORDINATOR).post(
        f"/episodes/{episode}/consent",
        data={"method": "tablet_signature", "signed_name": "Someone Else", "confirmed": "yes"},
    )
    assert r.status_code == 422, r.text[:300]
    assert 'value="Someone Else"' in r.text
    assert 'name="confirmed" value="yes" checked' in r.text
    assert state(clients, episode) == "eligible"


def test_the_assessment_form_says_which_field_each_refusal_is_about(clients, episode):
    r = clients(Role.DOCTOR).post(
        f"/episodes/{episode}/assess", data={"presenting_complaint": "", "pain_weeks": "x"}
    )
    assert r.status_code == 422, r.text[:300]
    summary = html.unescape(r.text[r.text.index('id="error-summary"') :])
    summary = summary[: summary.index("</div>")]
    assert "<strong>Presenting complaint:</strong> This field is required." in summary
    assert "<strong>Pain duration (weeks):</strong>" in summary


def test_the_timeline_names_a_step_that_leaves_the_state_as_it_was(clients, episode):
    """A decision asking for the doctor's review keeps the episode "Assessed"; the timeline
    said "Assessed (from Assessed)"."""
    assess(clients, episode, good_consultation(pain_weeks=4, physiotherapy_weeks=0))
    page = html.unescape(clients(Role.DOCTOR).get(f"/episodes/{episode}").text)
    timeline = page[page.index('<ol class="timeline">') :]
    assert "(from Assessed)" not in timeline and "(z Oceniony)" not in timeline
    assert "Apply eligibility decision" in timeline
