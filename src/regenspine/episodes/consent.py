"""Recording and withdrawing consent for one cycle of an episode, against a versioned document."""

from __future__ import annotations

import hashlib
import unicodedata

from sqlalchemy.orm import Session

from regenspine.audit import service as audit
from regenspine.auth.actor import Actor
from regenspine.auth.permissions import Permission
from regenspine.consultations.service import latest_consultation
from regenspine.db import utcnow
from regenspine.episodes import service as episodes
from regenspine.episodes.models import Consent
from regenspine.episodes.states import EpisodeState, Step
from regenspine.errors import N_, Conflict, InvalidInput, Message
from regenspine.patients.models import Patient
from regenspine.text import has_blank_letters, refuse_reordering

MAX_SCAN_BYTES = 5 * 1024 * 1024
SIGNED_NAME_MAX = 200  # the column's size
# Magic numbers, not the browser's word: a renamed file is refused.
SIGNATURES = {
    "application/pdf": (b"%PDF-",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
}
METHODS = ("tablet_signature", "scanned_form")


GENERIC_TYPES = frozenset({None, "", "application/octet-stream", "binary/octet-stream"})


def sniff(data: bytes) -> str | None:
    for content_type, prefixes in SIGNATURES.items():
        if any(data.startswith(p) for p in prefixes):
            return content_type
    return None


def _same_name(typed: str, patient: Patient) -> bool:
    def norm(text: str) -> str:
        return " ".join(unicodedata.normalize("NFC", text).casefold().split())

    full = norm(f"{patient.given_name} {patient.family_name}")
    return norm(typed) in (full, norm(f"{patient.family_name} {patient.given_name}"))


def record_consent(
    session: Session,
    actor: Actor,
    episode_id: int,
    *,
    method: str,
    signed_name: str,
    confirmed: bool,
    language: str,
    scan: bytes | None = None,
    scan_content_type: str | None = None,
    document_version: int | None = None,
) -> Consent:
    """The patient consents to the current cycle's procedure at the consultation's levels."""
    from regenspine.consent.documents import (
        UnknownConsentDocument,
        current_document,
        load_document,
    )

    actor.require(Permission.CONSENT_RECORD)
    episode = episodes.get_episode(session, actor, episode_id, lock=True)
    episodes.ensure_state(episode, EpisodeState.ELIGIBLE, step=Step.CONSENT)
    patient = session.get(Patient, episode.patient_id)
    assert patient is not None
    errors: dict[str, Message] = {}
    if method not in METHODS:
        errors["method"] = Message(N_("Choose signature on the tablet or a scanned form."))
    if language not in ("pl", "en"):
        errors["language"] = Message(N_("Choose Polish or English."))
    if not confirmed:
        errors["confirmed"] = Message(
            N_("The patient must confirm every statement of the consent form.")
        )
    if len(signed_name) > SIGNED_NAME_MAX:
        errors["signed_name"] = Message(
            N_("This field may have at most %(max)d characters."), max=SIGNED_NAME_MAX
        )
    elif (
        any(unicodedata.category(c) in ("Cc", "Cf") for c in signed_name)
        or has_blank_letters(signed_name)
        or (signed_name.strip() and not any(c.isalpha() for c in signed_name))
    ):
        # As in the patient's own name: an override shows "ikswolwoK naJ" as another name,
        # and a name of zero-width spaces is no name at all.
        errors["signed_name"] = Message(
            N_("Type the name as it is written, in letters, without invisible characters.")
        )
    elif method == "tablet_signature" and not _same_name(signed_name, patient):
        errors["signed_name"] = Message(
            N_("The patient types their own full name as registered (%(name)s)."),
            name=f"{patient.given_name} {patient.family_name}",
        )
    if method == "scanned_form":
        if not scan:
            errors["scan"] = Message(N_("Attach the signed form (PDF, PNG or JPEG)."))
        elif len(scan) > MAX_SCAN_BYTES:
            errors["scan"] = Message(N_("The file is larger than 5 MB."))
        else:
            sniffed = sniff(scan)
            # A browser that does not know the file's type says so: that claims nothing.
            claimed = scan_content_type if scan_content_type not in GENERIC_TYPES else None
            if sniffed is None or (claimed and claimed != sniffed):
                errors["scan"] = Message(
                    N_("The file is not a PDF, PNG or JPEG document. Scan the form again.")
                )
            scan_content_type = sniffed
    consultation = latest_consultation(session, episode.id)
    levels = list(consultation.target_levels) if consultation else []
    if not levels:
        errors["levels"] = Message(N_("Choose the target levels in the consultation first."))
    try:
        document = (
            load_document("bmac-spine", document_version)
            if document_version is not None
            else current_document("bmac-spine")
        )
    except UnknownConsentDocument:
        errors["document_version"] = Message(
            N_("There is no consent document with version %(version)s."),
            version=document_version,
        )
    if errors:
        raise InvalidInput(errors)
    existing = episodes.current_consent(session, episode)
    if existing is not None and existing.withdrawn_at is None:
        raise Conflict(
            Message(N_("A valid consent for this cycle is already recorded.")),
            refusal=episodes.step_refused(episode, step=Step.CONSENT.value, reason="consented"),
        )
    consent = Consent(
        episode_id=episode.id,
        cycle=episode.cycle,
        document_code=document.code,
        document_version=document.version,
        document_hash=document.content_hash,
        language=language,
        levels=levels,
        method=method,
        signed_name=signed_name.strip() or f"{patient.given_name} {patient.family_name}",
        explained_by=actor.user_id,
        explained_by_name=actor.full_name or actor.username,
        scan_content_type=scan_content_type if method == "scanned_form" else None,
        scan_sha256=hashlib.sha256(scan).hexdigest() if scan and method == "scanned_form" else None,
        scan_data=scan if method == "scanned_form" else None,
    )
    session.add(consent)
    session.flush()
    audit.record(
        session,
        actor,
        "consent.record",
        entity_type="consent",
        entity_id=consent.id,
        patient_id=episode.patient_id,
        detail={
            "episode": episode.id,
            "cycle": episode.cycle,
            "document": document.version,
            "method": method,
        },
    )
    episodes.advance(session, actor, episode.id, Step.CONSENT, EpisodeState.CONSENTED)
    return consent


def withdraw_consent(session: Session, actor: Actor, episode_id: int, reason: str) -> Consent:
    """Withdrawal stops the pathway before its next step; the consent stays in the record."""
    actor.require(Permission.CONSENT_RECORD)
    episode = episodes.get_episode(session, actor, episode_id, lock=True)
    consent = episodes.current_consent(session, episode)
    if consent is None or consent.withdrawn_at is not None:
        raise Conflict(
            Message(N_("There is no valid consent to withdraw.")),
            refusal=episodes.step_refused(
                episode, step=Step.WITHDRAW_CONSENT.value, reason="no_valid_consent"
            ),
        )
    text = reason.strip()
    if len(text) < 5:
        raise InvalidInput({"reason": Message(N_("Give the reason for this step."))})
    refuse_reordering("reason", text)
    if len(text) > episodes.REASON_MAX:
        raise InvalidInput(
            {
                "reason": Message(
                    N_("This field may have at most %(max)d characters."), max=episodes.REASON_MAX
                )
            }
        )
    consent.withdrawn_at = utcnow()
    consent.withdrawn_reason = text
    consent.withdrawn_recorded_by = actor.user_id
    audit.record(
        session,
        actor,
        "consent.withdraw",
        entity_type="consent",
        entity_id=consent.id,
        patient_id=episode.patient_id,
        detail={"episode": episode.id},
    )
    if episode.state in (EpisodeState.CONSENTED.value, EpisodeState.SCHEDULED.value):
        episodes.advance(
            session, actor, episode.id, Step.WITHDRAW_CONSENT, EpisodeState.ELIGIBLE, reason=text
        )
    return consent
