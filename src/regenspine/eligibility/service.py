"""Red-flag screening, the eligibility decision and the doctor's override, on the record.

The engine itself is pure (eligibility/rules.py); this module feeds it what the consultation
and the screening say, stores the decision with its inputs and rule-set version, and moves the
episode accordingly.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from regenspine.audit import service as audit
from regenspine.auth.actor import Actor
from regenspine.auth.permissions import Permission
from regenspine.consultations.models import Consultation
from regenspine.consultations.service import latest_consultation, record_consultation
from regenspine.db import utcnow
from regenspine.eligibility.models import EligibilityDecision, RedFlagScreening
from regenspine.eligibility.red_flags import (
    SAME_QUESTIONS,
    IncompleteScreening,
    disagreements,
    screen,
)
from regenspine.eligibility.rules import (
    Decision,
    EligibilityInputs,
    UnknownRuleSetVersion,
    evaluate,
    load_ruleset,
)
from regenspine.episodes import service as episodes
from regenspine.episodes.models import Episode
from regenspine.episodes.states import EpisodeState, Step
from regenspine.errors import N_, Conflict, InvalidInput, Message, RefusalRecord
from regenspine.text import refuse_reordering

MIN_JUSTIFICATION = 30
REASON_MAX = episodes.REASON_MAX
DECISION_STATE = {
    Decision.ELIGIBLE: EpisodeState.ELIGIBLE,
    Decision.NOT_ELIGIBLE: EpisodeState.NOT_ELIGIBLE,
    Decision.NEEDS_REVIEW: EpisodeState.ASSESSED,
}
EVALUABLE = (EpisodeState.ASSESSED, EpisodeState.ELIGIBLE, EpisodeState.NOT_ELIGIBLE)


def latest_screening(session: Session, episode_id: int) -> RedFlagScreening | None:
    return session.scalar(
        select(RedFlagScreening)
        .where(RedFlagScreening.episode_id == episode_id)
        .order_by(RedFlagScreening.id.desc())
        .limit(1)
    )


def record_screening(
    session: Session, actor: Actor, episode_id: int, answers: dict[str, bool]
) -> RedFlagScreening:
    """Stores the answers; any positive item sends the episode to urgent referral at once."""
    actor.require(Permission.CONSULTATION_RECORD)
    episode = episodes.get_episode(session, actor, episode_id, lock=True)
    try:
        result = screen(answers, episode.region)
    except IncompleteScreening as exc:
        raise InvalidInput({"answers": exc.message}) from None
    screening = RedFlagScreening(
        episode_id=episode.id,
        items_version=result.version,
        answers=dict(result.answers),
        positive=[item.id for item in result.positive],
        any_positive=result.any_positive,
        recorded_by=actor.user_id,
        recorded_by_name=actor.full_name or actor.username,
    )
    session.add(screening)
    session.flush()
    audit.record(
        session,
        actor,
        "red_flags.screen",
        entity_type="red_flag_screening",
        entity_id=screening.id,
        patient_id=episode.patient_id,
        detail={"episode": episode.id, "positive": ",".join(screening.positive)},
    )
    if result.any_positive and episode.state != EpisodeState.URGENT_REFERRAL.value:
        episodes.advance(
            session,
            actor,
            episode.id,
            Step.FLAG_RED,
            EpisodeState.URGENT_REFERRAL,
            reason=", ".join(screening.positive),
        )
    return screening


def _inputs(consultation: Consultation, screening: RedFlagScreening | None) -> EligibilityInputs:
    targets = tuple(consultation.target_levels or ())
    findings = consultation.level_findings or {}
    # A target level without imaging findings leaves these inputs missing (so the engine asks
    # for review) rather than letting the other levels speak for it.
    complete = bool(targets) and all(lv in findings for lv in targets)
    at_target = [findings[lv] for lv in targets if lv in findings] if complete else []
    losses = [f.get("disc_height_loss_percent") for f in at_target]
    grades = [f.get("pfirrmann") for f in at_target]
    modic = [f.get("modic") for f in at_target]
    known_losses = [x for x in losses if x is not None] if None not in losses else []
    known_grades = [x for x in grades if x is not None] if None not in grades else []
    conservative = consultation.physiotherapy_weeks
    return EligibilityInputs(
        red_flag_positive=bool(screening and screening.any_positive and not screening.cleared_at),
        active_infection=consultation.active_infection,
        active_malignancy=consultation.active_malignancy,
        pregnancy=consultation.pregnancy,
        bleeding_disorder=consultation.bleeding_disorder,
        immunosuppression=consultation.immunosuppression,
        anticoagulant=consultation.anticoagulant,
        pain_weeks=consultation.pain_weeks,
        conservative_treatment_weeks=conservative,
        bmi=consultation.bmi,
        target_levels=targets,
        prior_fusion_levels=tuple(consultation.prior_fusion_levels or ()),
        max_disc_height_loss_percent=max(known_losses) if known_losses else None,
        min_pfirrmann_at_target=min(known_grades) if known_grades else None,
        max_pfirrmann_at_target=max(known_grades) if known_grades else None,
        modic_at_target=(
            any(m not in ("none", None) for m in modic) if at_target and None not in modic else None
        ),
    )


def evaluate_episode(
    session: Session, actor: Actor, episode: Episode, ruleset_version: str | None = None
) -> EligibilityDecision:
    """Runs the engine on the latest consultation and screening and records the decision."""
    consultation = latest_consultation(session, episode.id)
    if consultation is None:
        raise episodes.StepNotAllowed(Message(N_("Record the consultation first.")))
    screening = latest_screening(session, episode.id)
    try:
        ruleset = load_ruleset(ruleset_version)
    except UnknownRuleSetVersion:
        raise InvalidInput(
            {
                "ruleset_version": Message(
                    N_("There is no eligibility rule set with version %(version)s."),
                    version=ruleset_version,
                )
            }
        ) from None
    inputs = _inputs(consultation, screening)
    result = evaluate(inputs, ruleset)
    decision = EligibilityDecision(
        episode_id=episode.id,
        consultation_id=consultation.id,
        screening_id=screening.id if screening else None,
        ruleset_version=result.ruleset_version,
        inputs=inputs.as_dict(),
        decision=result.decision.value,
        fired=[
            {
                "rule_id": f.rule_id,
                "outcome": f.outcome.value,
                "text_en": f.text_en,
                "text_pl": f.text_pl,
                "source": f.source,
                "levels": list(f.levels),
            }
            for f in result.fired
        ],
        excluded_levels=list(result.excluded_levels),
        red_flag=inputs.red_flag_positive,
    )
    session.add(decision)
    session.flush()
    audit.record(
        session,
        actor,
        "eligibility.decide",
        entity_type="eligibility_decision",
        entity_id=decision.id,
        patient_id=episode.patient_id,
        detail={
            "episode": episode.id,
            "decision": decision.decision,
            "ruleset": decision.ruleset_version,
        },
    )
    target = DECISION_STATE[result.decision]
    if EpisodeState(episode.state) in EVALUABLE:
        episodes.advance(session, actor, episode.id, Step.EVALUATE, target, reason=None)
    return decision


def assess(
    session: Session,
    actor: Actor,
    episode_id: int,
    consultation: dict[str, object],
    answers: dict[str, bool],
    change_reason: str | None = None,
    ruleset_version: str | None = None,
) -> tuple[Consultation, RedFlagScreening, EligibilityDecision | None]:
    """The doctor's assessment in one go: consultation, red-flag screening, decision."""
    record = record_consultation(session, actor, episode_id, consultation, change_reason)
    history = {q.history_field: getattr(record, q.history_field) for q in SAME_QUESTIONS}
    topics = disagreements(history, answers)
    if topics:
        raise InvalidInput(
            {
                "answers": Message(
                    N_(
                        "The history and the red-flag questions disagree about %(topic)s: "
                        "correct whichever answer is wrong."
                    ),
                    topic=Message(topics[0]),
                )
            }
        )
    screening = record_screening(session, actor, episode_id, answers)
    episode = episodes.get_episode(session, actor, episode_id, lock=True)
    if episode.state == EpisodeState.REFERRED.value:
        episodes.advance(session, actor, episode.id, Step.ASSESS, EpisodeState.ASSESSED)
    decision = None
    if episode.state != EpisodeState.URGENT_REFERRAL.value:
        decision = evaluate_episode(session, actor, episode, ruleset_version)
    return record, screening, decision


def override(
    session: Session, actor: Actor, episode_id: int, justification: str
) -> EligibilityDecision:
    """A doctor overrides "not eligible"/"needs review"; never a red-flag exclusion."""
    actor.require(Permission.ELIGIBILITY_OVERRIDE)
    episode = episodes.get_episode(session, actor, episode_id, lock=True)
    decision = episodes.latest_decision(session, episode)
    refusal = RefusalRecord(
        action="eligibility.override_refused",
        entity_type="episode",
        entity_id=str(episode.id),
        patient_id=episode.patient_id,
    )
    if decision is None:
        raise episodes.StepNotAllowed(
            Message(N_("There is no eligibility decision to override.")), refusal=refusal
        )
    if decision.red_flag or episodes.open_red_flags(session, episode) is not None:
        raise episodes.StepNotAllowed(
            Message(N_("A red flag can never be overridden: the patient needs urgent referral.")),
            refusal=refusal,
        )
    if decision.decision == Decision.ELIGIBLE.value or decision.overridden_at is not None:
        raise Conflict(
            Message(N_("This decision is already eligible; there is nothing to override.")),
            refusal=refusal,
        )
    if not episodes.decided_on_latest_assessment(session, episode, decision):
        raise episodes.StepNotAllowed(Message(episodes.STALE_DECISION), refusal=refusal)
    text = justification.strip()
    if len(text) < MIN_JUSTIFICATION:
        raise InvalidInput(
            {
                "justification": Message(
                    N_("Write a justification of at least %(min)d characters."),
                    min=MIN_JUSTIFICATION,
                )
            }
        )
    _refuse_too_long("justification", text)
    decision.overridden_by = actor.user_id
    decision.overridden_by_name = actor.full_name or actor.username
    decision.override_justification = text
    decision.overridden_at = utcnow()
    audit.record(
        session,
        actor,
        "eligibility.override",
        entity_type="eligibility_decision",
        entity_id=decision.id,
        patient_id=episode.patient_id,
        detail={"episode": episode.id, "was": decision.decision},
    )
    # Before any treatment the override makes the episode eligible; at follow-up, where
    # another cycle may start, it stays there, and the new cycle follows.
    source = EpisodeState(episode.state)
    target = source if source in OVERRIDDEN_IN_PLACE else EpisodeState.ELIGIBLE
    episodes.advance(session, actor, episode.id, Step.OVERRIDE, target, reason=text)
    return decision


OVERRIDDEN_IN_PLACE = frozenset({EpisodeState.FOLLOW_UP})


def _refuse_too_long(field: str, text: str) -> None:
    refuse_reordering(field, text)
    if len(text) > REASON_MAX:
        raise InvalidInput(
            {field: Message(N_("This field may have at most %(max)d characters."), max=REASON_MAX)}
        )


def clear_red_flag(session: Session, actor: Actor, episode_id: int, note: str) -> None:
    """A doctor's documented reassessment ends an urgent referral; the flag stays in history."""
    actor.require(Permission.CONSULTATION_RECORD)
    episode = episodes.get_episode(session, actor, episode_id, lock=True)
    screening = episodes.open_red_flags(session, episode)
    if screening is None:
        raise Conflict(
            Message(N_("There is no open red flag on this episode.")),
            refusal=episodes.step_refused(
                episode, step=Step.CLEAR_RED_FLAG.value, reason="no_open_red_flag"
            ),
        )
    text = note.strip()
    if len(text) < MIN_JUSTIFICATION:
        raise InvalidInput(
            {
                "note": Message(
                    N_("Document the reassessment in at least %(min)d characters."),
                    min=MIN_JUSTIFICATION,
                )
            }
        )
    _refuse_too_long("note", text)
    # One reassessment clears every flag still open on the episode (two assessments in a row
    # may each have found one).
    while screening is not None:
        screening.cleared_at = utcnow()
        screening.cleared_by = actor.user_id
        screening.clearance_note = text
        session.flush()
        screening = episodes.open_red_flags(session, episode)
    target = episodes.clearance_target(session, episode)
    episodes.advance(session, actor, episode.id, Step.CLEAR_RED_FLAG, target, reason=text)
    # The rules decide again on the newest consultation and the cleared screening: what the
    # assessment that found the flag recorded (an infection, other levels) is what counts,
    # never a decision taken before it.
    if latest_consultation(session, episode.id) is not None:
        evaluate_episode(session, actor, episode)
