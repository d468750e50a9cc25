"""A patient's access request (everything held, incl. who read the record) and erasure requests,
which are refused during the legal retention period and recorded either way."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from regenspine.audit import service as audit
from regenspine.audit.models import AuditRecord
from regenspine.auth.actor import Actor
from regenspine.auth.permissions import Permission
from regenspine.consultations.models import Consultation
from regenspine.eligibility.models import EligibilityDecision, RedFlagScreening
from regenspine.episodes.models import Consent, Episode, EpisodeEvent
from regenspine.errors import N_, InvalidInput, Message, NotFound
from regenspine.patients.models import CareTeamMember, Patient, PatientAmendment
from regenspine.patients.rules import PATIENT_FIELDS
from regenspine.privacy.rules import Retention, retention_for

# States after which a cell product existed: its traceability must be kept 30 years.
PRODUCT_STATES = ("harvested", "processed", "released", "rejected", "administered")
ANONYMISED = "[anonymised]"
# Free text in an episode's records may name the patient or their family, so anonymisation
# replaces it; coded data (levels, scores, states, dates) stay for the registry.
FREE_TEXT: tuple[tuple[Any, tuple[str, ...]], ...] = (
    (Consent, ("signed_name", "withdrawn_reason")),
    (EpisodeEvent, ("reason",)),
    (Consultation, ("presenting_complaint", "prior_treatments", "medications", "change_reason")),
    (RedFlagScreening, ("clearance_note",)),
    (EligibilityDecision, ("override_justification",)),
)


def _row(obj: Any, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in obj.__table__.columns:
        if column.key in exclude:
            continue
        value = getattr(obj, column.key)
        out[column.key] = value.isoformat() if isinstance(value, date | datetime) else value
    return out


def _patient(session: Session, patient_id: int) -> Patient:
    patient = session.get(Patient, patient_id)
    if patient is None:
        raise NotFound(Message(N_("There is no patient with this number.")))
    return patient


def access_export(session: Session, actor: Actor, patient_id: int) -> dict[str, Any]:
    """GDPR art. 15: every record held about the patient, and who accessed it."""
    actor.require(Permission.PRIVACY_MANAGE)
    patient = _patient(session, patient_id)
    episodes = list(session.scalars(select(Episode).where(Episode.patient_id == patient.id)))
    ids = [e.id for e in episodes]

    def rows(model: Any, column: Any, exclude: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        if not ids and column is not None and column.key == "episode_id":
            return []
        return [
            _row(r, exclude)
            for r in session.scalars(
                select(model)
                .where(column.in_(ids) if column.key == "episode_id" else column == patient.id)
                .order_by(model.id)
            )
        ]

    accesses = _accesses(session, patient.id)
    export = {
        "generated_at": audit.utcnow().isoformat(),
        "patient": _row(patient, ("given_name_norm", "family_name_norm")),
        "amendments": rows(PatientAmendment, PatientAmendment.patient_id),
        "care_team": rows(CareTeamMember, CareTeamMember.patient_id),
        "episodes": [_row(e) for e in episodes],
        "episode_events": rows(EpisodeEvent, EpisodeEvent.episode_id),
        "consultations": rows(Consultation, Consultation.episode_id),
        "red_flag_screenings": rows(RedFlagScreening, RedFlagScreening.episode_id),
        "eligibility_decisions": rows(EligibilityDecision, EligibilityDecision.episode_id),
        "consents": rows(Consent, Consent.episode_id, ("scan_data",)),
        # The signed forms themselves, in the same file, so one export answers the request.
        "consent_scans": _consent_scans(session, ids),
        "record_accesses": accesses,
    }
    audit.record(
        session,
        actor,
        "privacy.access_export",
        entity_type="patient",
        entity_id=patient.id,
        patient_id=patient.id,
        detail={"accesses": len(accesses)},
    )
    return export


def _accesses(session: Session, patient_id: int) -> list[dict[str, Any]]:
    """Every audit record about the patient, and every search whose results showed them."""
    found = []
    for r in session.scalars(
        select(AuditRecord)
        .where(
            or_(
                AuditRecord.patient_id == patient_id,
                # A cheap first cut; the ids in the detail decide (see search_record).
                and_(
                    AuditRecord.action == "patient.search",
                    AuditRecord.detail.like(f"%{patient_id}%"),
                ),
            )
        )
        .order_by(AuditRecord.seq)
    ):
        access = {
            "at": r.at.isoformat(),
            "who": r.actor_username,
            "role": r.actor_role,
            "action": r.action,
            "outcome": r.outcome,
            "entity_type": r.entity_type,
            "entity_id": r.entity_id,
        }
        if r.patient_id != patient_id:
            detail = json.loads(r.detail)
            if patient_id not in detail.get("patient_ids", ()):
                continue
            access |= {"entity_id": str(patient_id), "query_kind": detail.get("kind")}
        found.append(access)
    return found


def _consent_scans(session: Session, episode_ids: list[int]) -> list[dict[str, Any]]:
    if not episode_ids:
        return []
    return [
        {
            "consent_id": consent_id,
            "content_type": content_type,
            "sha256": hashlib.sha256(data).hexdigest(),
            "data_base64": base64.b64encode(data).decode("ascii"),
        }
        for consent_id, content_type, data in session.execute(
            select(Consent.id, Consent.scan_content_type, Consent.scan_data)
            .where(Consent.episode_id.in_(episode_ids), Consent.scan_data.is_not(None))
            .order_by(Consent.id)
        )
        if data is not None
    ]


def retention_of(session: Session, patient: Patient) -> Retention:
    episode_ids = select(Episode.id).where(Episode.patient_id == patient.id)
    candidates = [patient.registered_at] + [
        session.scalar(select(func.max(column)).where(where))
        for column, where in (
            (PatientAmendment.amended_at, PatientAmendment.patient_id == patient.id),
            (EpisodeEvent.at, EpisodeEvent.episode_id.in_(episode_ids)),
            (Consultation.recorded_at, Consultation.episode_id.in_(episode_ids)),
            # Consents, screenings and decisions are entries too, and may come last: a consent
            # withdrawn years after an episode was cancelled changes no episode state.
            (Consent.signed_at, Consent.episode_id.in_(episode_ids)),
            (Consent.withdrawn_at, Consent.episode_id.in_(episode_ids)),
            (RedFlagScreening.recorded_at, RedFlagScreening.episode_id.in_(episode_ids)),
            (RedFlagScreening.cleared_at, RedFlagScreening.episode_id.in_(episode_ids)),
            (EligibilityDecision.decided_at, EligibilityDecision.episode_id.in_(episode_ids)),
            (EligibilityDecision.overridden_at, EligibilityDecision.episode_id.in_(episode_ids)),
        )
    ]
    last = max(c for c in candidates if c is not None)
    used = (
        session.scalar(
            select(func.count(EpisodeEvent.id)).where(
                EpisodeEvent.episode_id.in_(episode_ids), EpisodeEvent.to_state.in_(PRODUCT_STATES)
            )
        )
        or 0
    )
    return retention_for(last.date(), used > 0)


@dataclass(frozen=True)
class ErasureOutcome:
    erased: bool
    retention: Retention
    message: Message


def request_erasure(
    session: Session, actor: Actor, patient_id: int, reason: str, today: date | None = None
) -> ErasureOutcome:
    """GDPR art. 17(3)(b)/(c): erasure yields to a legal duty to keep medical records. During
    retention the request is refused with the reason and recorded; afterwards the identity is
    anonymised (clinical data stay, without who the patient was)."""
    actor.require(Permission.PRIVACY_MANAGE)
    patient = _patient(session, patient_id)
    text = reason.strip()
    if len(text) < 5:
        raise InvalidInput({"reason": Message(N_("Give the reason for this step."))})
    retention = retention_of(session, patient)
    today = today or date.today()
    if not retention.allows_erasure(today):
        message = Message(
            N_(
                "Erasure refused: the law requires keeping these records until %(until)s "
                "(%(basis)s). The request is recorded."
            ),
            until=retention.keep_until.isoformat(),
            basis=Message(retention.basis),
        )
        audit.record(
            session,
            actor,
            "privacy.erasure_refused",
            entity_type="patient",
            entity_id=patient.id,
            patient_id=patient.id,
            outcome=audit.Outcome.REFUSED,
            # The reason may name the patient or quote their letter, and the log can never be
            # anonymised: it keeps only that a reason was given.
            detail={"reason_length": len(text), "keep_until": retention.keep_until.isoformat()},
        )
        return ErasureOutcome(False, retention, message)
    _anonymise(session, patient)
    audit.record(
        session,
        actor,
        "privacy.anonymised",
        entity_type="patient",
        entity_id=patient.id,
        patient_id=patient.id,
        detail={"reason_length": len(text)},
    )
    return ErasureOutcome(
        True,
        retention,
        Message(N_("The patient's identity was anonymised; clinical data remain without it.")),
    )


def _anonymise(session: Session, patient: Patient) -> None:
    patient.given_name = patient.family_name = ANONYMISED
    patient.given_name_norm = patient.family_name_norm = ANONYMISED
    # The birth year stays (age matters for outcomes); the day and month do not.
    patient.date_of_birth = date(patient.date_of_birth.year, 1, 1)
    patient.id_type = "none"
    for field in (
        "national_id",
        "id_country",
        "phone",
        "email",
        "address",
        "postal_code",
        "city",
        "emergency_contact_name",
        "emergency_contact_phone",
    ):
        if field in PATIENT_FIELDS:
            setattr(patient, field, None)
    patient.version += 1
    for amendment in session.scalars(
        select(PatientAmendment).where(PatientAmendment.patient_id == patient.id)
    ):
        amendment.old_value = amendment.new_value = ANONYMISED
        amendment.reason = ANONYMISED
    episode_ids = select(Episode.id).where(Episode.patient_id == patient.id)
    for model, fields in FREE_TEXT:
        for row in session.scalars(select(model).where(model.episode_id.in_(episode_ids))):
            for field in fields:
                if getattr(row, field):
                    setattr(row, field, ANONYMISED)
    for consent in session.scalars(select(Consent).where(Consent.episode_id.in_(episode_ids))):
        consent.scan_data = None
