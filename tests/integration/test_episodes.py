"""Treatment episodes on both databases: opening, steps the table refuses, roles, races."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from regenspine.audit.models import AuditRecord
from regenspine.auth.permissions import Role
from regenspine.db import unit_of_work
from regenspine.episodes import service
from regenspine.episodes.models import Episode, EpisodeEvent
from regenspine.episodes.states import EpisodeState as S
from regenspine.episodes.states import Step
from regenspine.errors import Conflict, InvalidInput, PermissionDenied
from regenspine.i18n import translations
from regenspine.patients import service as patients
from tests.conftest import valid_patient


@pytest.fixture
def episode_id(factory, staff) -> int:
    with unit_of_work(factory) as s:
        pid = patients.register_patient(s, staff.actor(Role.COORDINATOR), valid_patient()).id
        return service.open_episode(
            s, staff.actor(Role.COORDINATOR), pid, "disc_protrusion", "lumbar"
        ).id


def _state(factory, episode_id: int) -> str:
    with factory() as s:
        return s.get(Episode, episode_id).state


def test_an_opened_episode_starts_as_referred_with_its_first_event(factory, episode_id):
    with factory() as s:
        episode = s.get(Episode, episode_id)
        events = s.scalars(select(EpisodeEvent)).all()
    assert episode.state == "referred" and episode.cycle == 1 and episode.max_cycles == 3
    assert [(e.from_state, e.to_state) for e in events] == [(None, "referred")]


def test_an_episode_for_a_condition_outside_its_region_is_refused(db, staff):
    pid = patients.register_patient(db, staff.actor(Role.COORDINATOR), valid_patient()).id
    with pytest.raises(InvalidInput) as err:
        service.open_episode(db, staff.actor(Role.COORDINATOR), pid, "neck_pain", "lumbar")
    assert "region" in err.value.field_errors
    # The regions are named in the reader's language (the Polish page said "cervical").
    refusal = err.value.field_errors["region"]
    assert refusal.render().endswith(": cervical.")
    assert refusal.render(translations("pl").gettext).endswith(": szyjny.")
    with pytest.raises(InvalidInput):
        service.open_episode(db, staff.actor(Role.COORDINATOR), pid, "no_such_thing", "lumbar")


def test_a_second_open_episode_for_the_same_condition_is_refused(factory, staff, episode_id):
    with factory() as s:
        pid = s.get(Episode, episode_id).patient_id
    with pytest.raises(Conflict), unit_of_work(factory) as s:
        service.open_episode(s, staff.actor(Role.DOCTOR), pid, "disc_protrusion", "lumbar")


def test_a_step_the_table_does_not_allow_is_refused_and_changes_nothing(factory, staff, episode_id):
    with pytest.raises(service.StepNotAllowed) as err, unit_of_work(factory) as s:
        service.advance(s, staff.actor(Role.DOCTOR), episode_id, Step.HARVEST, S.HARVESTED)
    assert "does not allow" in str(err.value)
    assert _state(factory, episode_id) == "referred"


def test_a_role_outside_the_step_is_refused(factory, staff, episode_id):
    with pytest.raises(PermissionDenied), unit_of_work(factory) as s:
        service.advance(s, staff.actor(Role.COORDINATOR), episode_id, Step.ASSESS, S.ASSESSED)
    with pytest.raises(PermissionDenied), unit_of_work(factory) as s:
        service.advance(s, staff.actor(Role.NURSE), episode_id, Step.ASSESS, S.ASSESSED)
    assert _state(factory, episode_id) == "referred"


def test_cancelling_needs_a_reason_and_is_recorded_with_it(factory, staff, episode_id):
    with pytest.raises(InvalidInput), unit_of_work(factory) as s:
        service.advance(s, staff.actor(Role.COORDINATOR), episode_id, Step.CANCEL, S.CANCELLED)
    with unit_of_work(factory) as s:
        service.advance(
            s,
            staff.actor(Role.COORDINATOR),
            episode_id,
            Step.CANCEL,
            S.CANCELLED,
            reason="Patient moved abroad",
        )
    with factory() as s:
        last = s.scalars(select(EpisodeEvent).order_by(EpisodeEvent.id.desc())).first()
        audited = s.scalar(
            select(func.count(AuditRecord.id)).where(AuditRecord.action == "episode.cancel")
        )
    assert (last.to_state, last.reason, last.actor_name) == (
        "cancelled",
        "Patient moved abroad",
        "Test Coordinator",
    )
    assert audited == 1


def test_eligibility_cannot_be_set_by_hand_without_the_engine_or_a_justified_override(
    factory, staff, episode_id
):
    with pytest.raises(service.StepNotAllowed) as err, unit_of_work(factory) as s:
        service.advance(s, staff.actor(Role.DOCTOR), episode_id, Step.ASSESS, S.ASSESSED)
    assert "consultation" in str(err.value)
    with factory() as s:
        s.get(Episode, episode_id).state = "assessed"  # as if assessed, to try the next steps
        s.commit()
    for step, target in ((Step.OVERRIDE, S.ELIGIBLE), (Step.EVALUATE, S.ELIGIBLE)):
        with pytest.raises(service.StepNotAllowed), unit_of_work(factory) as s:
            service.advance(s, staff.actor(Role.DOCTOR), episode_id, step, target, reason="x" * 40)
    assert _state(factory, episode_id) == "assessed"


def test_a_step_taken_on_a_stale_view_is_a_conflict(factory, staff, episode_id):
    with unit_of_work(factory) as s:
        service.advance(
            s,
            staff.actor(Role.COORDINATOR),
            episode_id,
            Step.CANCEL,
            S.CANCELLED,
            reason="Duplicate referral",
            expected_state=S.REFERRED,
        )
    with pytest.raises(Conflict) as err, unit_of_work(factory) as s:
        service.advance(
            s,
            staff.actor(Role.MEDICAL_DIRECTOR),
            episode_id,
            Step.CANCEL,
            S.CANCELLED,
            reason="Patient declined",
            expected_state=S.REFERRED,
        )
    assert "Someone else" in str(err.value)


def test_two_people_moving_one_episode_at_once_exactly_one_wins(factory, staff, episode_id):
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def move(role: Role) -> None:
        barrier.wait()
        try:
            with unit_of_work(factory) as s:
                service.advance(
                    s,
                    staff.actor(role),
                    episode_id,
                    Step.CANCEL,
                    S.CANCELLED,
                    reason=f"Cancelled by {role.value}",
                    expected_state=S.REFERRED,
                )
            outcomes.append("won")
        except Conflict:
            outcomes.append("conflict")

    threads = [
        threading.Thread(target=move, args=(r,)) for r in (Role.COORDINATOR, Role.MEDICAL_DIRECTOR)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict", "won"]
    with factory() as s:
        moves = s.scalars(select(EpisodeEvent).where(EpisodeEvent.step == "cancel")).all()
    assert len(moves) == 1
