"""Opening episodes and moving them along the pathway; every move is checked and recorded."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from regenspine.audit import service as audit
from regenspine.auth.actor import Actor
from regenspine.auth.models import User
from regenspine.auth.permissions import Permission, Role
from regenspine.catalog.conditions import get_catalogue
from regenspine.config import get_settings
from regenspine.consultations.models import Consultation
from regenspine.consultations.rules import REGION_LABELS
from regenspine.eligibility.models import EligibilityDecision, RedFlagScreening
from regenspine.episodes.models import Consent, Episode, EpisodeEvent
from regenspine.episodes.states import (
    DECISION_TARGET,
    NEEDS_VALID_CONSENT,
    OPEN_STATES,
    OWN_FORM_STEPS,
    STATE_LABELS,
    STEP_LABELS,
    EpisodeState,
    Step,
    find_transition,
    roles_for,
)
from regenspine.errors import (
    N_,
    Conflict,
    DomainError,
    InvalidInput,
    Listing,
    Message,
    PermissionDenied,
    RefusalRecord,
)
from regenspine.patients import service as patients
from regenspine.text import refuse_reordering

REASON_REQUIRED = frozenset({Step.CANCEL, Step.CLOSE, Step.CLEAR_RED_FLAG, Step.WITHDRAW_CONSENT})
MIN_REASON = 5
REASON_MAX = 2000


class StepNotAllowed(Conflict):
    """The pathway does not allow this step now; the message says what is missing."""


def _name(session: Session, actor: Actor) -> str:
    user = session.get(User, actor.user_id) if actor.user_id else None
    return user.full_name if user else actor.username


def open_episode(
    session: Session, actor: Actor, patient_id: int, condition_code: str, region: str
) -> Episode:
    actor.require(Permission.EPISODE_OPEN)
    patient = patients.get_patient(session, actor, patient_id, purpose="open_episode")
    errors: dict[str, Message] = {}
    try:
        condition = get_catalogue().get(condition_code)
    except KeyError:
        errors["condition_code"] = Message(N_("Choose a condition from the catalogue."))
        raise InvalidInput(errors) from None
    regions = [str(r) for r in condition.regions]
    if region not in regions:
        errors["region"] = Message(
            N_("This condition is treated in these regions only: %(regions)s."),
            regions=Listing(Message(REGION_LABELS.get(r, r)) for r in regions),
        )
        raise InvalidInput(errors)
    existing = session.scalar(
        select(Episode.id).where(
            Episode.patient_id == patient.id,
            Episode.condition_code == condition_code,
            Episode.state.in_([s.value for s in OPEN_STATES]),
        )
    )
    if existing is not None:
        raise Conflict(
            Message(
                N_("This patient already has an open episode for this condition (#%(id)s)."),
                id=existing,
            )
        )
    episode = Episode(
        patient_id=patient.id,
        condition_code=condition_code,
        region=region,
        state=EpisodeState.REFERRED.value,
        cycle=1,
        max_cycles=get_settings().max_treatment_cycles,
        opened_by=actor.user_id,
        version=1,
    )
    session.add(episode)
    session.flush()
    session.add(
        EpisodeEvent(
            episode_id=episode.id,
            step="open",
            from_state=None,
            to_state=episode.state,
            cycle=1,
            actor_user_id=actor.user_id,
            actor_name=_name(session, actor),
            reason=None,
        )
    )
    audit.record(
        session,
        actor,
        "episode.open",
        entity_type="episode",
        entity_id=episode.id,
        patient_id=patient.id,
        detail={"condition": condition_code, "region": region},
    )
    return episode


def get_episode(session: Session, actor: Actor, episode_id: int, *, lock: bool = False) -> Episode:
    actor.require(Permission.EPISODE_READ)
    episode = session.get(Episode, episode_id, with_for_update=lock, populate_existing=lock)
    if episode is None:
        raise patients.missing_record(
            actor,
            Message(N_("There is no treatment episode with this number.")),
            "episode",
            episode_id,
        )
    patient = session.get(patients.Patient, episode.patient_id)
    assert patient is not None
    patients.ensure_patient_access(session, actor, patient)
    return episode


def current_consent(session: Session, episode: Episode) -> Consent | None:
    return session.scalar(
        select(Consent)
        .where(Consent.episode_id == episode.id, Consent.cycle == episode.cycle)
        .order_by(Consent.id.desc())
        .limit(1)
    )


def latest_decision(session: Session, episode: Episode) -> EligibilityDecision | None:
    return session.scalar(
        select(EligibilityDecision)
        .where(EligibilityDecision.episode_id == episode.id)
        .order_by(EligibilityDecision.id.desc())
        .limit(1)
    )


def open_red_flags(session: Session, episode: Episode) -> RedFlagScreening | None:
    return session.scalar(
        select(RedFlagScreening)
        .where(
            RedFlagScreening.episode_id == episode.id,
            RedFlagScreening.any_positive.is_(True),
            RedFlagScreening.cleared_at.is_(None),
        )
        .order_by(RedFlagScreening.id.desc())
        .limit(1)
    )


STALE_DECISION = N_(
    "The eligibility decision was taken before the newest consultation or red-flag screening: "
    "record the assessment again so that the rules decide on what is recorded now."
)


def _missing(why: str, **params: object) -> StepNotAllowed:
    return StepNotAllowed(Message(why, **params))


# A cycle treats once: each of these steps is refused once its cycle has had the step named
# (one procedure day, one injection). Another treatment is another cycle.
ONCE_PER_CYCLE: dict[Step, Step] = {
    Step.SCHEDULE: Step.HARVEST,
    Step.HARVEST: Step.HARVEST,
    Step.ADMINISTER: Step.ADMINISTER,
}


def _taken_in_cycle(session: Session, episode: Episode, step: Step) -> bool:
    return (
        session.scalar(
            select(EpisodeEvent.id)
            .where(
                EpisodeEvent.episode_id == episode.id,
                EpisodeEvent.cycle == episode.cycle,
                EpisodeEvent.step == step.value,
            )
            .limit(1)
        )
        is not None
    )


def clearance_target(session: Session, episode: Episode) -> EpisodeState:
    """Where clearing a red flag returns the episode: to its follow-up once this cycle's
    injection was given, else to assessment (and from there to a fresh decision)."""
    treated = _taken_in_cycle(session, episode, Step.ADMINISTER)
    return EpisodeState.FOLLOW_UP if treated else EpisodeState.ASSESSED


def decided_on_latest_assessment(
    session: Session, episode: Episode, decision: EligibilityDecision
) -> bool:
    """Whether the decision was taken on the episode's newest consultation and screening. An
    assessment that finds a red flag makes no decision; the decision before it must not lead
    to treatment past what that assessment recorded (an infection, other levels), neither
    overridden nor as it stands."""
    consultation_id = session.scalar(
        select(Consultation.id)
        .where(Consultation.episode_id == episode.id)
        .order_by(Consultation.version.desc())
        .limit(1)
    )
    screening_id = session.scalar(
        select(RedFlagScreening.id)
        .where(RedFlagScreening.episode_id == episode.id)
        .order_by(RedFlagScreening.id.desc())
        .limit(1)
    )
    return decision.consultation_id == consultation_id and decision.screening_id == screening_id


def _reviewed_since_injection(
    session: Session, episode: Episode, decision: EligibilityDecision
) -> bool:
    """Whether the decision was taken after this cycle's injection (true if it had none, as
    after a rejected product): another treatment follows a review of this one."""
    injected_at = session.scalar(
        select(EpisodeEvent.at)
        .where(
            EpisodeEvent.episode_id == episode.id,
            EpisodeEvent.cycle == episode.cycle,
            EpisodeEvent.step == Step.ADMINISTER.value,
        )
        .order_by(EpisodeEvent.id.desc())
        .limit(1)
    )
    return injected_at is None or decision.decided_at > injected_at


def preconditions_hold(
    session: Session, episode: Episode, step: Step, target: EpisodeState
) -> bool:
    """Whether the step could be taken now, beyond the table: a page offers only such steps
    (a button that can only be refused helps nobody)."""
    try:
        _check_preconditions(session, episode, step, target)
    except StepNotAllowed:
        return False
    return True


def _check_preconditions(
    session: Session, episode: Episode, step: Step, target: EpisodeState
) -> None:
    """What must be true before a step, beyond the table; each refusal says what is missing."""
    decision = latest_decision(session, episode)
    if step == Step.ASSESS:
        has_consultation = session.scalar(
            select(Consultation.id).where(Consultation.episode_id == episode.id).limit(1)
        )
        has_screening = session.scalar(
            select(RedFlagScreening.id).where(RedFlagScreening.episode_id == episode.id).limit(1)
        )
        if has_consultation is None or has_screening is None:
            raise _missing(N_("Record the consultation and the red-flag screening first."))
    if step == Step.EVALUATE and (decision is None or DECISION_TARGET[decision.decision] != target):
        raise _missing(N_("Only the eligibility engine's decision can set eligibility."))
    if step == Step.OVERRIDE and (
        decision is None or decision.overridden_at is None or decision.red_flag
    ):
        raise _missing(N_("An override needs the doctor's written justification on the decision."))
    if step == Step.FLAG_RED and open_red_flags(session, episode) is None:
        raise _missing(N_("Record the red-flag screening that found the red flag."))
    if step == Step.CLEAR_RED_FLAG and open_red_flags(session, episode) is not None:
        raise _missing(N_("Document the reassessment that clears the red flag."))
    if step == Step.CLEAR_RED_FLAG and target != clearance_target(session, episode):
        raise _missing(
            N_(
                "After this cycle's injection a cleared red flag returns the episode to its "
                "follow-up; before it, to assessment."
            )
        )
    if step in ONCE_PER_CYCLE and _taken_in_cycle(session, episode, ONCE_PER_CYCLE[step]):
        raise _missing(
            N_(
                "Cycle %(cycle)s already had its procedure day. Another treatment is another "
                "cycle, started after the follow-up review."
            ),
            cycle=episode.cycle,
        )
    if (
        step == Step.NEW_CYCLE
        and decision is not None
        and not _reviewed_since_injection(session, episode, decision)
    ):
        raise _missing(
            N_(
                "Another cycle follows a review of this one: record the follow-up assessment "
                "made after cycle %(cycle)s's injection first."
            ),
            cycle=episode.cycle,
        )
    if step == Step.NEW_CYCLE and (
        open_red_flags(session, episode) is not None
        or decision is None
        or not decision.effective_eligible
        or not decided_on_latest_assessment(session, episode, decision)
    ):
        raise _missing(
            N_(
                "Another cycle needs the latest assessment to find the patient eligible (or a "
                "doctor's override) and no open red flag."
            )
        )
    if step in NEEDS_VALID_CONSENT or step == Step.CONSENT:
        if open_red_flags(session, episode) is not None:
            raise _missing(
                N_("A red flag is open: this patient needs urgent referral, not this therapy.")
            )
        if decision is None or not decision.effective_eligible:
            raise _missing(N_("There is no eligible (or overridden) eligibility decision."))
    if step in NEEDS_VALID_CONSENT:
        consent = current_consent(session, episode)
        if consent is None:
            raise _missing(
                N_("There is no signed consent for cycle %(cycle)s."), cycle=episode.cycle
            )
        if consent.withdrawn_at is not None:
            raise _missing(
                N_(
                    "The patient withdrew consent; nothing more may be done in this "
                    "cycle without a new consent."
                )
            )
        targets = session.scalar(
            select(Consultation.target_levels)
            .where(Consultation.episode_id == episode.id)
            .order_by(Consultation.version.desc())
            .limit(1)
        )
        if sorted(consent.levels or []) != sorted(targets or []):
            raise _missing(
                N_(
                    "The consent covers %(consented)s, but the assessment now targets "
                    "%(targets)s: the patient must consent to these levels first."
                ),
                consented=", ".join(consent.levels or []) or "-",
                targets=", ".join(targets or []) or "-",
            )
    if (step in NEEDS_VALID_CONSENT or step == Step.CONSENT) and not (
        decision is not None and decided_on_latest_assessment(session, episode, decision)
    ):
        raise _missing(STALE_DECISION)
    if step == Step.CONSENT:
        consent = current_consent(session, episode)
        if consent is None or consent.withdrawn_at is not None:
            raise _missing(N_("Record the patient's signed consent first."))
    if step == Step.NEW_CYCLE and episode.cycle >= episode.max_cycles:
        raise _missing(
            N_("This episode has had the maximum of %(max)s treatment cycles."),
            max=episode.max_cycles,
        )


def step_refused(episode: Episode, **detail: str) -> RefusalRecord:
    """The audit record of a refused step: which episode, whose record, and why."""
    return RefusalRecord(
        action="episode.step_refused",
        entity_type="episode",
        entity_id=str(episode.id),
        patient_id=episode.patient_id,
        detail=detail,
    )


def _role_refusal(episode: Episode, step: Step) -> PermissionDenied:
    return PermissionDenied(
        Message(N_('Your role cannot take the step "%(step)s".'), step=Message(STEP_LABELS[step])),
        refusal=step_refused(episode, step=step.value, reason="role"),
    )


def take_step(
    session: Session,
    actor: Actor,
    episode_id: int,
    step: Step,
    target: EpisodeState,
    *,
    reason: str | None = None,
    expected_state: EpisodeState | None = None,
) -> EpisodeEvent:
    """A step asked for by a person on the episode page or the API's generic step endpoint.

    Steps with a form of their own (assessment, override, consent, ...) are refused here: their
    services record what the step stands for and then move the episode themselves.
    """
    actor.require(Permission.EPISODE_ADVANCE)
    if step in OWN_FORM_STEPS:
        episode = get_episode(session, actor, episode_id)
        if not actor.is_system and (actor.role is None or Role(actor.role) not in roles_for(step)):
            raise _role_refusal(episode, step)
        raise StepNotAllowed(
            Message(OWN_FORM_STEPS[step]),
            refusal=step_refused(episode, step=step.value, reason="own_form"),
        )
    return advance(
        session, actor, episode_id, step, target, reason=reason, expected_state=expected_state
    )


def advance(
    session: Session,
    actor: Actor,
    episode_id: int,
    step: Step,
    target: EpisodeState,
    *,
    reason: str | None = None,
    expected_state: EpisodeState | None = None,
) -> EpisodeEvent:
    """Moves an episode one step, under a row lock so two people cannot both move it."""
    actor.require(Permission.EPISODE_ADVANCE)
    episode = get_episode(session, actor, episode_id, lock=True)
    source = EpisodeState(episode.state)
    if expected_state is not None and expected_state != source:
        raise Conflict(
            Message(
                N_(
                    'Someone else has just moved this episode to "%(state)s". Reload the page '
                    "and check before you continue."
                ),
                state=Message(STATE_LABELS[source]),
            ),
            refusal=step_refused(
                episode, step=step.value, reason="moved_meanwhile", expected=expected_state.value
            ),
        )
    transition = find_transition(step, source, target)
    if transition is None:
        raise StepNotAllowed(
            Message(
                N_('The pathway does not allow "%(step)s" from "%(state)s" to "%(target)s".'),
                step=Message(STEP_LABELS[step]),
                state=Message(STATE_LABELS[source]),
                target=Message(STATE_LABELS[target]),
            ),
            refusal=step_refused(
                episode, step=step.value, **{"from": source.value, "to": target.value}
            ),
        )
    if not actor.is_system and (actor.role is None or Role(actor.role) not in transition.roles):
        raise _role_refusal(episode, step)
    cleaned_reason = (reason or "").strip() or None
    if step in REASON_REQUIRED and (cleaned_reason is None or len(cleaned_reason) < MIN_REASON):
        raise InvalidInput({"reason": Message(N_("Give the reason for this step."))})
    refuse_reordering("reason", cleaned_reason or "")
    if cleaned_reason is not None and len(cleaned_reason) > REASON_MAX:
        raise InvalidInput(
            {
                "reason": Message(
                    N_("This field may have at most %(max)d characters."), max=REASON_MAX
                )
            }
        )
    try:
        _check_preconditions(session, episode, step, target)
    except StepNotAllowed as exc:
        exc.refusal = step_refused(episode, step=step.value, missing=exc.message.msgid)
        raise
    if step == Step.NEW_CYCLE:
        episode.cycle += 1
    episode.state = target.value
    episode.version += 1
    event = EpisodeEvent(
        episode_id=episode.id,
        step=step.value,
        from_state=source.value,
        to_state=target.value,
        cycle=episode.cycle,
        actor_user_id=actor.user_id,
        actor_name=_name(session, actor),
        reason=cleaned_reason,
    )
    session.add(event)
    session.flush()
    audit.record(
        session,
        actor,
        f"episode.{step.value}",
        entity_type="episode",
        entity_id=episode.id,
        patient_id=episode.patient_id,
        detail={"from": source.value, "to": target.value, "cycle": episode.cycle},
    )
    return event


def timeline(session: Session, episode: Episode) -> list[EpisodeEvent]:
    return list(
        session.scalars(
            select(EpisodeEvent)
            .where(EpisodeEvent.episode_id == episode.id)
            .order_by(EpisodeEvent.id)
        )
    )


def timelines(session: Session, episode_ids: list[int]) -> dict[int, list[EpisodeEvent]]:
    """Events of several episodes in one query (the chart shows every episode's timeline)."""
    grouped: dict[int, list[EpisodeEvent]] = {i: [] for i in episode_ids}
    if episode_ids:
        for event in session.scalars(
            select(EpisodeEvent)
            .where(EpisodeEvent.episode_id.in_(episode_ids))
            .order_by(EpisodeEvent.id)
        ):
            grouped[event.episode_id].append(event)
    return grouped


def episodes_of_patient(session: Session, actor: Actor, patient_id: int) -> list[Episode]:
    actor.require(Permission.EPISODE_READ)
    patient = session.get(patients.Patient, patient_id)
    # The record-level rule: care-team-bound roles see their own patients only, and learn
    # nothing about numbers that are nobody's.
    if patient is not None:
        patients.ensure_patient_access(session, actor, patient)
    elif patients.is_care_team_bound(actor):
        raise patients.missing_record(actor, patients.NO_SUCH_PATIENT, "patient", patient_id)
    return list(
        session.scalars(
            select(Episode).where(Episode.patient_id == patient_id).order_by(Episode.id.desc())
        )
    )


@dataclass(frozen=True)
class WorkItem:
    episode: Episode
    patient_name: str
    mrn: str
    why: str  # msgid
    urgent: bool


WORK_BY_ROLE: dict[Role, dict[EpisodeState, str]] = {
    Role.DOCTOR: {
        EpisodeState.URGENT_REFERRAL: N_("Urgent referral: red flag found"),
        EpisodeState.REFERRED: N_("To assess"),
        EpisodeState.ASSESSED: N_("Eligibility needs your review"),
        EpisodeState.NOT_ELIGIBLE: N_("Not eligible: confirm or override"),
    },
    Role.MEDICAL_DIRECTOR: {
        EpisodeState.URGENT_REFERRAL: N_("Urgent referral: red flag found"),
        EpisodeState.ASSESSED: N_("Eligibility needs your review"),
    },
    Role.COORDINATOR: {
        EpisodeState.ELIGIBLE: N_("To consent"),
        EpisodeState.CONSENTED: N_("To schedule"),
        EpisodeState.ADMINISTERED: N_("To start follow-up"),
    },
    Role.LAB_TECHNICIAN: {
        EpisodeState.HARVESTED: N_("To process"),
        EpisodeState.PROCESSED: N_("To release or reject"),
    },
}


def work_list(session: Session, actor: Actor, limit: int = 200) -> list[WorkItem]:
    """Episodes waiting for the actor's role; urgent referrals first."""
    actor.require(Permission.EPISODE_READ)
    wanted = WORK_BY_ROLE.get(Role(actor.role), {}) if actor.role else {}
    if not wanted:
        return []
    rows = session.execute(
        select(Episode, patients.Patient)
        .join(patients.Patient, patients.Patient.id == Episode.patient_id)
        .where(Episode.state.in_([s.value for s in wanted]))
        .order_by(Episode.opened_at)
        .limit(limit)
    ).all()
    items = [
        WorkItem(
            e,
            p.display_name,
            p.mrn,
            wanted[EpisodeState(e.state)],
            e.state == EpisodeState.URGENT_REFERRAL.value,
        )
        for e, p in rows
    ]
    items.sort(key=lambda w: not w.urgent)
    if items:
        audit.record(
            session, actor, "episode.work_list", entity_type="episode", detail={"items": len(items)}
        )
    return items


def ensure_state(episode: Episode, *allowed: EpisodeState, step: Step) -> None:
    """Refuses, with its audit record, a form's step that the episode's state does not allow."""
    if EpisodeState(episode.state) not in allowed:
        raise StepNotAllowed(
            Message(
                N_('This cannot be done while the episode is "%(state)s".'),
                state=Message(STATE_LABELS[EpisodeState(episode.state)]),
            ),
            refusal=step_refused(episode, step=step.value, state=episode.state),
        )


__all__ = ["DomainError", "StepNotAllowed", "advance", "open_episode", "work_list"]
