"""The pathway as a table: which state may follow which, and which roles may move it (pure).

One episode treats one condition of one patient. A cycle is one harvest-to-injection day; a
review after follow-up may open another cycle, up to the configured maximum.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from regenspine.auth.permissions import Role
from regenspine.errors import N_


class EpisodeState(StrEnum):
    REFERRED = "referred"
    ASSESSED = "assessed"
    URGENT_REFERRAL = "urgent_referral"
    NOT_ELIGIBLE = "not_eligible"
    ELIGIBLE = "eligible"
    CONSENTED = "consented"
    SCHEDULED = "scheduled"
    HARVESTED = "harvested"
    PROCESSED = "processed"
    RELEASED = "released"
    REJECTED = "rejected"
    ADMINISTERED = "administered"
    FOLLOW_UP = "follow_up"
    CLOSED = "closed"
    CANCELLED = "cancelled"


STATE_LABELS: dict[EpisodeState, str] = {
    EpisodeState.REFERRED: N_("Referred"),
    EpisodeState.ASSESSED: N_("Assessed"),
    EpisodeState.URGENT_REFERRAL: N_("Urgent referral"),
    EpisodeState.NOT_ELIGIBLE: N_("Not eligible"),
    EpisodeState.ELIGIBLE: N_("Eligible"),
    EpisodeState.CONSENTED: N_("Consented"),
    EpisodeState.SCHEDULED: N_("Scheduled"),
    EpisodeState.HARVESTED: N_("Harvested"),
    EpisodeState.PROCESSED: N_("Processed"),
    EpisodeState.RELEASED: N_("Released"),
    EpisodeState.REJECTED: N_("Rejected"),
    EpisodeState.ADMINISTERED: N_("Administered"),
    EpisodeState.FOLLOW_UP: N_("Follow-up"),
    EpisodeState.CLOSED: N_("Closed"),
    EpisodeState.CANCELLED: N_("Cancelled"),
}

FINAL_STATES = frozenset({EpisodeState.CLOSED, EpisodeState.CANCELLED})
OPEN_STATES = frozenset(EpisodeState) - FINAL_STATES


class Step(StrEnum):
    """Why a transition happens; each step has its own preconditions in the service."""

    ASSESS = "assess"  # consultation and red-flag screening recorded
    EVALUATE = "evaluate"  # the eligibility engine decided (or re-decided after a change)
    FLAG_RED = "flag_red"  # a red flag was found: urgent referral, never this therapy
    CLEAR_RED_FLAG = "clear_red_flag"  # a doctor's documented reassessment
    OVERRIDE = "override"  # a doctor overrides "not eligible"/"needs review" with justification
    CONSENT = "consent"
    WITHDRAW_CONSENT = "withdraw_consent"
    SCHEDULE = "schedule"
    HARVEST = "harvest"
    PROCESS = "process"
    RELEASE = "release"
    REJECT = "reject"
    ADMINISTER = "administer"
    START_FOLLOW_UP = "start_follow_up"
    NEW_CYCLE = "new_cycle"  # after review: another harvest-to-injection cycle
    CLOSE = "close"
    CANCEL = "cancel"


STEP_LABELS: dict[Step, str] = {
    Step.ASSESS: N_("Mark as assessed"),
    Step.EVALUATE: N_("Apply eligibility decision"),
    Step.FLAG_RED: N_("Urgent referral"),
    Step.CLEAR_RED_FLAG: N_("Clear red flag after reassessment"),
    Step.OVERRIDE: N_("Override eligibility"),
    Step.CONSENT: N_("Confirm consent"),
    Step.WITHDRAW_CONSENT: N_("Consent withdrawn"),
    Step.SCHEDULE: N_("Schedule procedure day"),
    Step.HARVEST: N_("Marrow harvested"),
    Step.PROCESS: N_("Processing finished"),
    Step.RELEASE: N_("Release product"),
    Step.REJECT: N_("Reject product"),
    Step.ADMINISTER: N_("Injection given"),
    Step.START_FOLLOW_UP: N_("Start follow-up"),
    Step.NEW_CYCLE: N_("Start another cycle"),
    Step.CLOSE: N_("Close episode"),
    Step.CANCEL: N_("Cancel episode"),
}

# Steps that belong to a form of their own and its service (assessment, override, red-flag
# clearance, consent). The generic step endpoints refuse them, so that, for example, "consent
# withdrawn" can never be recorded without the consent itself being marked withdrawn.
OWN_FORM_STEPS: dict[Step, str] = {
    Step.ASSESS: N_("Record the consultation and red-flag screening on the assessment form."),
    Step.EVALUATE: N_(
        "The eligibility decision is taken by the engine when the assessment is saved."
    ),
    Step.FLAG_RED: N_("Record the red flag on the assessment form."),
    Step.CLEAR_RED_FLAG: N_("Clear a red flag with the documented reassessment on its form."),
    Step.OVERRIDE: N_("Override eligibility with the written justification on its form."),
    Step.CONSENT: N_("Record the patient's consent on the consent form."),
    Step.WITHDRAW_CONSENT: N_("Record the withdrawal of consent on the consent form."),
}


CLINICIANS = frozenset({Role.DOCTOR, Role.MEDICAL_DIRECTOR})
FRONT_DESK = frozenset({Role.COORDINATOR, Role.DOCTOR, Role.MEDICAL_DIRECTOR})
LAB = frozenset({Role.LAB_TECHNICIAN})


@dataclass(frozen=True)
class Transition:
    step: Step
    source: EpisodeState
    target: EpisodeState
    roles: frozenset[Role]


S = EpisodeState
_EVALUATED = (S.ELIGIBLE, S.NOT_ELIGIBLE, S.ASSESSED)

_TABLE: list[tuple[Step, tuple[EpisodeState, ...], tuple[EpisodeState, ...], frozenset[Role]]] = [
    (Step.ASSESS, (S.REFERRED,), (S.ASSESSED,), CLINICIANS),
    # The engine re-decides whenever the consultation changes, before any consent exists.
    # "assessed" as a target means: the engine asks for the doctor's review.
    (Step.EVALUATE, (S.ASSESSED, S.ELIGIBLE, S.NOT_ELIGIBLE), _EVALUATED, CLINICIANS),
    (
        Step.FLAG_RED,
        (S.REFERRED, S.ASSESSED, S.ELIGIBLE, S.NOT_ELIGIBLE, S.CONSENTED, S.SCHEDULED, S.FOLLOW_UP),
        (S.URGENT_REFERRAL,),
        CLINICIANS,
    ),
    # Back to assessment; or, after this cycle's injection, back to its follow-up (a cycle
    # treats once: another treatment is another cycle).
    (Step.CLEAR_RED_FLAG, (S.URGENT_REFERRAL,), (S.ASSESSED, S.FOLLOW_UP), CLINICIANS),
    (Step.OVERRIDE, (S.ASSESSED, S.NOT_ELIGIBLE), (S.ELIGIBLE,), CLINICIANS),
    # At follow-up the review's decision is overridden in place: the episode stays there, and
    # the new cycle (which needs an eligible decision) starts after it.
    (Step.OVERRIDE, (S.FOLLOW_UP,), (S.FOLLOW_UP,), CLINICIANS),
    (Step.CONSENT, (S.ELIGIBLE,), (S.CONSENTED,), FRONT_DESK),
    (Step.WITHDRAW_CONSENT, (S.CONSENTED, S.SCHEDULED), (S.ELIGIBLE,), FRONT_DESK),
    (Step.SCHEDULE, (S.CONSENTED,), (S.SCHEDULED,), FRONT_DESK),
    (Step.HARVEST, (S.SCHEDULED,), (S.HARVESTED,), CLINICIANS),
    (Step.PROCESS, (S.HARVESTED,), (S.PROCESSED,), LAB),
    (Step.RELEASE, (S.PROCESSED,), (S.RELEASED,), LAB),
    (Step.REJECT, (S.PROCESSED,), (S.REJECTED,), LAB),
    (Step.ADMINISTER, (S.RELEASED,), (S.ADMINISTERED,), CLINICIANS),
    (Step.START_FOLLOW_UP, (S.ADMINISTERED,), (S.FOLLOW_UP,), FRONT_DESK),
    (Step.NEW_CYCLE, (S.FOLLOW_UP, S.REJECTED), (S.ELIGIBLE,), CLINICIANS),
    (
        Step.CLOSE,
        (S.FOLLOW_UP, S.NOT_ELIGIBLE, S.URGENT_REFERRAL, S.REJECTED),
        (S.CLOSED,),
        CLINICIANS,
    ),
    (Step.CANCEL, tuple(sorted(OPEN_STATES)), (S.CANCELLED,), FRONT_DESK),
]

TRANSITIONS: tuple[Transition, ...] = tuple(
    Transition(step, source, target, roles)
    for step, sources, targets, roles in _TABLE
    for source in sources
    for target in targets
)
_INDEX: dict[tuple[Step, EpisodeState, EpisodeState], Transition] = {
    (t.step, t.source, t.target): t for t in TRANSITIONS
}

# Steps after which an injection-day product exists; consent must be valid to enter them.
NEEDS_VALID_CONSENT = frozenset(
    {Step.SCHEDULE, Step.HARVEST, Step.PROCESS, Step.RELEASE, Step.ADMINISTER}
)


DECISION_LABELS: dict[str, str] = {
    "eligible": N_("eligible"),
    "not_eligible": N_("not eligible"),
    "needs_review": N_("needs the doctor's review"),
}
RULE_OUTCOME_LABELS: dict[str, str] = {
    "exclude": N_("excludes"),
    "needs_review": N_("needs review"),
    "supports": N_("supports"),
}

# The state each engine decision leads to ("needs review" keeps the episode assessed).
DECISION_TARGET: dict[str, EpisodeState] = {
    "eligible": EpisodeState.ELIGIBLE,
    "not_eligible": EpisodeState.NOT_ELIGIBLE,
    "needs_review": EpisodeState.ASSESSED,
}


def find_transition(step: Step, source: EpisodeState, target: EpisodeState) -> Transition | None:
    return _INDEX.get((step, source, target))


def roles_for(step: Step) -> frozenset[Role]:
    """Every role that may take the step from some state."""
    return frozenset(role for t in TRANSITIONS if t.step == step for role in t.roles)


def allowed_steps(source: EpisodeState) -> list[Transition]:
    return [t for t in TRANSITIONS if t.source == source]


def is_allowed(source: EpisodeState, target: EpisodeState) -> bool:
    """Whether any step leads from source to target (what the table permits at all)."""
    return any(t.source == source and t.target == target for t in TRANSITIONS)
