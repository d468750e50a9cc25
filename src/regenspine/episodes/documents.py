"""Printable documents of an episode: the urgent referral letter and the signed consent."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from regenspine.audit import service as audit
from regenspine.auth.actor import Actor
from regenspine.auth.fields import clinical_text
from regenspine.consultations.service import latest_consultation
from regenspine.db import utcnow
from regenspine.eligibility.models import RedFlagScreening
from regenspine.eligibility.red_flags import get_red_flags
from regenspine.episodes import service as episodes
from regenspine.errors import N_, Conflict, Message
from regenspine.patients.models import Patient
from regenspine.reports.pdf import render_pdf


def urgent_referral_letter(session: Session, actor: Actor, episode_id: int, language: str) -> bytes:
    """The letter listing the positive red-flag findings, for the receiving service."""
    episode = episodes.get_episode(session, actor, episode_id)
    screening = session.scalar(
        select(RedFlagScreening)
        .where(RedFlagScreening.episode_id == episode.id, RedFlagScreening.any_positive.is_(True))
        .order_by(RedFlagScreening.id.desc())
        .limit(1)
    )
    if screening is None:
        raise Conflict(Message(N_("No red flag was found for this episode: there is no letter.")))
    patient = session.get(Patient, episode.patient_id)
    items = get_red_flags()
    findings = [items.get(i).text(language) for i in screening.positive]
    consultation = latest_consultation(session, episode.id)
    complaint = consultation.presenting_complaint if consultation else None
    shown = clinical_text(actor, "consultation", "presenting_complaint", complaint)
    pdf = render_pdf(
        "reports/urgent_referral.html",
        {
            "patient": patient,
            "episode": episode,
            "screening": screening,
            "findings": findings,
            "complaint": shown,
            "complaint_withheld": bool(complaint) and shown is None,
            "now": utcnow(),
        },
        language,
    )
    audit.record(
        session,
        actor,
        "letter.urgent_referral",
        entity_type="episode",
        entity_id=episode.id,
        patient_id=episode.patient_id,
        detail={"screening": screening.id, "language": language},
    )
    return pdf


def signed_consent(session: Session, actor: Actor, episode_id: int) -> bytes:
    """The exact consent text the patient signed, with the signature block."""
    from regenspine.consent.documents import load_document

    episode = episodes.get_episode(session, actor, episode_id)
    consent = episodes.current_consent(session, episode)
    if consent is None:
        raise Conflict(Message(N_("Record the patient's signed consent first.")))
    document = load_document(consent.document_code, consent.document_version)
    if document.content_hash != consent.document_hash:
        # The stored text changed after signing: printing it would misrepresent the consent.
        raise Conflict(
            Message(
                N_(
                    "The consent document on file no longer matches what the patient signed; "
                    "contact the administrator."
                )
            )
        )
    rendered = document.render(consent.language, consent.levels, episode.region)
    patient = session.get(Patient, episode.patient_id)
    pdf = render_pdf(
        "reports/consent.html",
        {
            "doc": rendered,
            "consent": consent,
            "patient": patient,
            "withdrawn_reason": clinical_text(
                actor, "consent", "withdrawn_reason", consent.withdrawn_reason
            ),
        },
        consent.language,
    )
    audit.record(
        session,
        actor,
        "consent.print",
        entity_type="consent",
        entity_id=consent.id,
        patient_id=episode.patient_id,
    )
    return pdf
