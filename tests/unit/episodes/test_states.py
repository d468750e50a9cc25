"""The pathway table: what may follow what, and who may move it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from regenspine.auth.permissions import Role
from regenspine.episodes.states import (
    FINAL_STATES,
    OPEN_STATES,
    TRANSITIONS,
    EpisodeState,
    Step,
    allowed_steps,
    find_transition,
    is_allowed,
)

S = EpisodeState


def test_the_happy_path_from_referral_to_closure_is_allowed_in_order():
    path = [
        (Step.ASSESS, S.REFERRED, S.ASSESSED),
        (Step.EVALUATE, S.ASSESSED, S.ELIGIBLE),
        (Step.CONSENT, S.ELIGIBLE, S.CONSENTED),
        (Step.SCHEDULE, S.CONSENTED, S.SCHEDULED),
        (Step.HARVEST, S.SCHEDULED, S.HARVESTED),
        (Step.PROCESS, S.HARVESTED, S.PROCESSED),
        (Step.RELEASE, S.PROCESSED, S.RELEASED),
        (Step.ADMINISTER, S.RELEASED, S.ADMINISTERED),
        (Step.START_FOLLOW_UP, S.ADMINISTERED, S.FOLLOW_UP),
        (Step.CLOSE, S.FOLLOW_UP, S.CLOSED),
    ]
    for step, source, target in path:
        assert find_transition(step, source, target) is not None, (step, source, target)


def test_no_harvest_without_consent_and_no_injection_before_release():
    assert not is_allowed(S.ELIGIBLE, S.HARVESTED)
    assert not is_allowed(S.CONSENTED, S.HARVESTED)
    assert not is_allowed(S.HARVESTED, S.ADMINISTERED)
    assert not is_allowed(S.PROCESSED, S.ADMINISTERED)
    assert not is_allowed(S.REJECTED, S.ADMINISTERED)


def test_urgent_referral_never_leads_towards_treatment_except_through_reassessment():
    """Cleared, a red flag returns the episode to assessment (a new decision), or, after the
    cycle's injection, to its follow-up: never straight to a treatment step."""
    targets = {t.target for t in allowed_steps(S.URGENT_REFERRAL)}
    assert targets == {S.ASSESSED, S.FOLLOW_UP, S.CLOSED, S.CANCELLED}
    assert {t.target for t in allowed_steps(S.FOLLOW_UP)} <= {
        S.URGENT_REFERRAL,
        S.FOLLOW_UP,  # an override of the review's decision, in place
        S.ELIGIBLE,
        S.CLOSED,
        S.CANCELLED,
    }
    assert find_transition(Step.OVERRIDE, S.URGENT_REFERRAL, S.ELIGIBLE) is None


def test_override_is_a_clinicians_step_and_only_from_a_decision_state():
    """Before treatment an override makes the episode eligible; where another cycle may start
    it leaves the episode where it is (the new cycle follows), and it never moves an episode
    anywhere else."""
    moves = {(t.source, t.target) for t in TRANSITIONS if t.step == Step.OVERRIDE}
    assert moves == {
        (S.ASSESSED, S.ELIGIBLE),
        (S.NOT_ELIGIBLE, S.ELIGIBLE),
        (S.FOLLOW_UP, S.FOLLOW_UP),
    }
    assert {t.source for t in TRANSITIONS if t.step == Step.NEW_CYCLE} == {
        S.FOLLOW_UP,
        S.REJECTED,
    }
    assert all(
        t.roles <= {Role.DOCTOR, Role.MEDICAL_DIRECTOR}
        for t in TRANSITIONS
        if t.step == Step.OVERRIDE
    )


def test_only_the_laboratory_processes_releases_or_rejects_a_product():
    for step in (Step.PROCESS, Step.RELEASE, Step.REJECT):
        assert {r for t in TRANSITIONS if t.step == step for r in t.roles} == {Role.LAB_TECHNICIAN}


def test_every_open_state_can_be_cancelled_and_final_states_lead_nowhere():
    for state in OPEN_STATES:
        assert find_transition(Step.CANCEL, state, S.CANCELLED) is not None
    for state in FINAL_STATES:
        assert allowed_steps(state) == []


def test_auditors_physiotherapists_and_nurses_take_no_step():
    roles = {r for t in TRANSITIONS for r in t.roles}
    assert not roles & {Role.AUDITOR, Role.PHYSIOTHERAPIST, Role.NURSE, Role.ADMIN}


@given(st.lists(st.integers(min_value=0, max_value=1000), max_size=60))
def test_random_walks_through_the_table_always_inject_only_after_consent_harvest_and_release(
    choices,
):
    """Walk the table at random (each move one of the steps it allows): every time a walk
    reaches "administered", the current cycle passed consent, scheduling, harvest, processing
    and release, in that order, since the cycle became eligible."""
    state = S.REFERRED
    seen: list[EpisodeState] = [state]
    for choice in choices:
        options = allowed_steps(state)
        if not options:
            break
        transition = options[choice % len(options)]
        assert transition.source == state
        state = transition.target
        seen.append(state)
        if state == S.ADMINISTERED:
            cycle_start = max(i for i, s in enumerate(seen) if s == S.ELIGIBLE)
            cycle = seen[cycle_start:]
            order = [
                cycle.index(s)
                for s in (
                    S.CONSENTED,
                    S.SCHEDULED,
                    S.HARVESTED,
                    S.PROCESSED,
                    S.RELEASED,
                    S.ADMINISTERED,
                )
            ]
            assert order == sorted(order)
        assert state not in FINAL_STATES or not allowed_steps(state)
