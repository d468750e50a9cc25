"""Recording a consultation: each save is a new version; the previous ones stay readable."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from regenspine.audit import service as audit
from regenspine.auth.actor import Actor
from regenspine.auth.permissions import Permission
from regenspine.catalog.conditions import get_catalogue
from regenspine.consultations.models import Consultation
from regenspine.consultations.rules import validate_consultation
from regenspine.episodes import service as episodes
from regenspine.episodes.states import EpisodeState, Step
from regenspine.errors import N_, InvalidInput, Message
from regenspine.text import refuse_reordering

# Before consent the decision may still change; between consent and injection it may not.
EDITABLE_STATES = (
    EpisodeState.REFERRED,
    EpisodeState.ASSESSED,
    EpisodeState.ELIGIBLE,
    EpisodeState.NOT_ELIGIBLE,
    EpisodeState.URGENT_REFERRAL,
    EpisodeState.FOLLOW_UP,
)


def latest_consultation(session: Session, episode_id: int) -> Consultation | None:
    return session.scalar(
        select(Consultation)
        .where(Consultation.episode_id == episode_id)
        .order_by(Consultation.version.desc())
        .limit(1)
    )


def consultation_history(session: Session, episode_id: int) -> list[Consultation]:
    return list(
        session.scalars(
            select(Consultation)
            .where(Consultation.episode_id == episode_id)
            .order_by(Consultation.version.desc())
        )
    )


def record_consultation(
    session: Session,
    actor: Actor,
    episode_id: int,
    raw: dict[str, object],
    change_reason: str | None = None,
) -> Consultation:
    actor.require(Permission.CONSULTATION_RECORD)
    episode = episodes.get_episode(session, actor, episode_id, lock=True)
    episodes.ensure_state(episode, *EDITABLE_STATES, step=Step.ASSESS)
    data = validate_consultation(raw, episode.region, get_catalogue(), date.today())
    previous = (
        session.scalar(
            select(func.max(Consultation.version)).where(Consultation.episode_id == episode.id)
        )
        or 0
    )
    reason = (change_reason or "").strip() or None
    refuse_reordering("change_reason", reason or "")
    if previous and (reason is None or len(reason) < 5):
        raise InvalidInput(
            {
                "change_reason": Message(
                    N_(
                        "Say why the consultation is changed; the earlier version stays "
                        "in the record."
                    )
                )
            }
        )
    values = asdict(data)
    values["prior_fusion_levels"] = list(data.prior_fusion_levels)
    values["target_levels"] = list(data.target_levels)
    values["diagnoses"] = [
        {"condition": d.condition, "levels": list(d.levels), "side": d.side} for d in data.diagnoses
    ]
    values["level_findings"] = {lv: asdict(f) for lv, f in data.level_findings.items()}
    consultation = Consultation(
        episode_id=episode.id,
        version=previous + 1,
        recorded_by=actor.user_id,
        recorded_by_name=actor.full_name or actor.username,
        change_reason=reason,
        **values,
    )
    session.add(consultation)
    session.flush()
    audit.record(
        session,
        actor,
        "consultation.record",
        entity_type="consultation",
        entity_id=consultation.id,
        patient_id=episode.patient_id,
        detail={"episode": episode.id, "version": consultation.version},
    )
    return consultation
