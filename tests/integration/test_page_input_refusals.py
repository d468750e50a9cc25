"""Addresses and forms the pages never make are refused with a page in words, never a server
error, and a refusal shows nothing of the record (ASVS 5.0 V2.2.1, V8.2.2, V16.5.1)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from regenspine.audit.models import AuditRecord
from regenspine.auth.permissions import Role
from tests.conftest import open_lumbar_episode, valid_patient

HUGE = "9" * 25  # beyond any database integer


@pytest.fixture
def episode(clients):
    return open_lumbar_episode(clients)


@pytest.mark.parametrize(
    "path",
    [
        f"/patients/{HUGE}",
        f"/patients/{HUGE}/amend",
        f"/patients/{HUGE}/episodes/panel",
        f"/episodes/{HUGE}",
        f"/episodes/{HUGE}/assess",
        "/patients/abc",
        "/episodes/0",
    ],
)
def test_a_page_address_with_an_impossible_id_gets_a_page_in_words(clients, path):
    r = clients(Role.DOCTOR).get(path)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert "not one the clinic's pages make" in r.text.replace("&#39;", "'")


@pytest.mark.parametrize(
    "path",
    [
        "/audit?patient_id=%C2%B2",
        f"/audit?patient_id={HUGE}",
        "/audit?date_to=9999-12-31",
        "/api/v1/audit/records?date_to=9999-12-31",
    ],
)
def test_audit_filters_in_unusual_digits_or_at_the_end_of_time_do_not_fail(clients, path):
    assert clients(Role.AUDITOR).get(path).status_code in (200, 422)


def test_an_amendment_with_a_version_in_unusual_digits_is_refused_in_words(clients, episode):
    pid, _ = episode
    r = clients(Role.COORDINATOR).post(
        f"/patients/{pid}/amend",
        data=valid_patient(given_name="Janusz") | {"reason": "Typo in the name", "version": "²"},
    )
    assert r.status_code < 500, r.text


def test_someone_refused_an_amendment_sees_the_error_page_not_the_record(clients, episode, factory):
    pid, _ = episode
    r = clients(Role.AUDITOR).post(
        f"/patients/{pid}/amend",
        data=valid_patient(given_name="Janusz") | {"reason": "Typo in the name", "version": "1"},
    )
    assert r.status_code == 403
    assert "Kowalski" not in r.text
    with factory() as s:
        reads = s.scalars(
            select(AuditRecord.action).where(
                AuditRecord.actor_username == "auditor", AuditRecord.outcome == "success"
            )
        ).all()
    assert "patient.read_for_amendment" not in reads


def test_the_assessment_form_and_the_episode_panel_record_who_read_them(clients, episode, factory):
    pid, eid = episode
    assert clients(Role.DOCTOR).get(f"/episodes/{eid}/assess").status_code == 200
    assert clients(Role.DOCTOR).get(f"/patients/{pid}/episodes/panel").status_code == 200
    with factory() as s:
        actions = s.scalars(
            select(AuditRecord.action).where(
                AuditRecord.actor_username == "doctor", AuditRecord.patient_id == pid
            )
        ).all()
    assert "consultation.read" in actions and "patient.read_episodes" in actions
