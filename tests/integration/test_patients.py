"""Patient registration, search and amendment on both databases."""

from __future__ import annotations

import threading
from datetime import date

import pytest
from sqlalchemy import func, select

from regenspine.auth.permissions import Role
from regenspine.db import unit_of_work
from regenspine.errors import Conflict, InvalidInput, PermissionDenied
from regenspine.identifiers import mod37_2_valid
from regenspine.patients import service
from regenspine.patients.models import CareTeamMember, Patient, PatientAmendment
from regenspine.patients.pesel import make_pesel
from tests.conftest import person, sign_in, valid_patient


def _patients(factory) -> int:
    with factory() as s:
        return s.scalar(select(func.count(Patient.id))) or 0


def test_registered_patient_gets_a_checkable_medical_record_number(db, staff):
    p = service.register_patient(db, staff.actor(Role.COORDINATOR), valid_patient())
    assert p.mrn.startswith("RS") and len(p.mrn) == 9
    assert mod37_2_valid(p.mrn)
    assert p.national_id == "44051401458" and p.id_country == "PL"


def test_second_registration_with_the_same_pesel_is_refused_and_stores_nothing(factory, staff):
    with unit_of_work(factory) as s:
        service.register_patient(s, staff.actor(Role.COORDINATOR), valid_patient())
    with pytest.raises(service.PossibleDuplicate) as err, unit_of_work(factory) as s:
        service.register_patient(
            s,
            staff.actor(Role.NURSE),
            valid_patient(given_name="Janusz"),
            confirm_not_duplicate=True,
        )
    assert "already registered" in str(err.value)
    assert _patients(factory) == 1


def test_same_name_and_birth_date_needs_confirmation_and_is_flagged(factory, staff):
    passport = {"id_type": "passport", "national_id": "X1234567", "id_country": "GB"}
    with unit_of_work(factory) as s:
        first = service.register_patient(s, staff.actor(Role.COORDINATOR), valid_patient())
    with pytest.raises(service.PossibleDuplicate), unit_of_work(factory) as s:
        service.register_patient(s, staff.actor(Role.COORDINATOR), valid_patient(**passport))
    assert _patients(factory) == 1
    with unit_of_work(factory) as s:
        second = service.register_patient(
            s,
            staff.actor(Role.COORDINATOR),
            valid_patient(**passport),
            confirm_not_duplicate=True,
        )
    assert second.possible_duplicate_of == first.id


def test_auditor_cannot_register_a_patient(db, staff):
    with pytest.raises(PermissionDenied):
        service.register_patient(db, staff.actor(Role.AUDITOR), valid_patient())


def test_amendment_keeps_the_previous_value_and_the_reason(factory, staff):
    with unit_of_work(factory) as s:
        pid = service.register_patient(s, staff.actor(Role.COORDINATOR), valid_patient()).id
    with unit_of_work(factory) as s:
        service.amend_patient(
            s,
            staff.actor(Role.NURSE),
            pid,
            {"phone": "+48 700 800 900", "city": "Gdańsk"},
            "Patient moved and changed number",
        )
    with factory() as s:
        patient = s.get(Patient, pid)
        rows = s.scalars(select(PatientAmendment).order_by(PatientAmendment.field)).all()
    assert patient.phone == "+48 700 800 900" and patient.version == 2
    assert [(r.field, r.old_value, r.new_value) for r in rows] == [
        ("city", "Kraków", "Gdańsk"),
        ("phone", "+48 600 100 200", "+48 700 800 900"),
    ]
    assert {r.reason for r in rows} == {"Patient moved and changed number"}
    assert {r.amended_by_name for r in rows} == {"Test Nurse"}


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"national_id": "44051401459"}, "Typo in PESEL", "national_id"),
        ({"date_of_birth": "2999-01-01"}, "Wrong birth date", "date_of_birth"),
        ({"phone": "+48 111 222 333"}, "no", "reason"),
        ({"family_name": "x" * 101}, "Name corrected", "family_name"),
        # A right-to-left override shows the reason's words in another order than written.
        ({"phone": "+48 111 222 333"}, "Patient \u202edetseuqer", "reason"),
        # Hangul fillers are letters to Unicode, yet show as nothing: a blank name.
        ({"family_name": "\u3164\u3164\u3164"}, "Name corrected", "family_name"),
    ],
)
def test_invalid_amendment_is_refused_and_changes_nothing(factory, staff, changes, reason, field):
    with unit_of_work(factory) as s:
        pid = service.register_patient(s, staff.actor(Role.COORDINATOR), valid_patient()).id
    with pytest.raises(InvalidInput) as err, unit_of_work(factory) as s:
        service.amend_patient(s, staff.actor(Role.NURSE), pid, changes, reason)
    assert field in err.value.field_errors
    with factory() as s:
        patient = s.get(Patient, pid)
        assert patient.version == 1 and patient.phone == "+48 600 100 200"
        assert s.scalar(select(func.count(PatientAmendment.id))) == 0


def test_amending_a_record_someone_else_just_changed_is_refused(factory, staff):
    with unit_of_work(factory) as s:
        pid = service.register_patient(s, staff.actor(Role.COORDINATOR), valid_patient()).id
    with unit_of_work(factory) as s:
        service.amend_patient(s, staff.actor(Role.NURSE), pid, {"city": "Łódź"}, "Moved house", 1)
    with pytest.raises(Conflict), unit_of_work(factory) as s:
        service.amend_patient(s, staff.actor(Role.DOCTOR), pid, {"city": "Lublin"}, "Moved", 1)
    with factory() as s:
        assert s.get(Patient, pid).city == "Łódź"


def test_search_finds_patients_by_pesel_mrn_birth_date_and_name_without_diacritics(db, staff):
    actor = staff.actor(Role.COORDINATOR)
    a = service.register_patient(db, actor, valid_patient())
    pesel = make_pesel(__import__("datetime").date(1980, 2, 29), 17, "female")
    b = service.register_patient(
        db,
        actor,
        valid_patient(
            given_name="Łucja",
            family_name="Żółkiewska",
            date_of_birth="1980-02-29",
            sex="female",
            national_id=pesel,
        ),
    )

    def found(q: str) -> list[int]:
        return [p.id for p in service.search_patients(db, actor, q).patients]

    assert found("44051401458") == [a.id]
    assert found(b.mrn) == [b.id]
    assert found("1980-02-29") == [b.id]
    assert found("29.02.1980") == [b.id]
    assert found("zolk luc") == [b.id]
    # As the patient list shows a name: "FAMILY, Given".
    assert found("ŻÓŁKIEWSKA, Łucja") == [b.id]
    assert found("kowal") == [a.id]
    assert found("100%_") == []


def test_physiotherapist_finds_and_opens_only_patients_on_their_care_team(db, staff):
    coordinator = staff.actor(Role.COORDINATOR)
    physio = staff.actor(Role.PHYSIOTHERAPIST)
    mine = service.register_patient(db, coordinator, valid_patient())
    other = service.register_patient(
        db,
        coordinator,
        person("Ewa", "Kowalska", date(1990, 1, 1), 5, "female"),
    )
    service.add_to_care_team(db, coordinator, mine.id, staff.users[Role.PHYSIOTHERAPIST].id)
    assert [p.id for p in service.search_patients(db, physio, "kowal").patients] == [mine.id]
    assert service.get_patient(db, physio, mine.id).id == mine.id
    with pytest.raises(PermissionDenied):
        service.get_patient(db, physio, other.id)
    assert db.scalar(select(func.count(CareTeamMember.id))) == 1


def test_concurrent_registrations_get_distinct_record_numbers(factory, staff):
    from datetime import date

    errors: list[BaseException] = []
    actor = staff.actor(Role.COORDINATOR)

    def register(n: int) -> None:
        try:
            for i in range(5):
                pesel = make_pesel(date(1960 + n, 1 + i, 10), n * 10 + i, "female")
                with unit_of_work(factory) as s:
                    service.register_patient(
                        s,
                        actor,
                        valid_patient(
                            given_name="Ola",
                            family_name=f"Nowak{'a' * n}",
                            sex="female",
                            date_of_birth=f"{1960 + n}-{1 + i:02d}-10",
                            national_id=pesel,
                        ),
                    )
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(n,)) for n in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with factory() as s:
        mrns = s.scalars(select(Patient.mrn)).all()
    assert len(mrns) == 20 and len(set(mrns)) == 20


def test_the_search_box_sends_what_is_searched_for_in_the_body_never_in_the_address(
    app, staff, factory
):
    """ASVS 5.0 V14.2.1: a name or PESEL searched for on the page travels in the request body
    (POST, with the CSRF token), never in an address the page makes: not in the search form,
    not in the pages of the results. An HTMX search gets the results alone. Bad input is
    refused with 422 and nothing is searched."""
    coordinator = staff.actor(Role.COORDINATOR)
    with unit_of_work(factory) as s:
        for n in range(27):
            service.register_patient(
                s,
                coordinator,
                person("Zofia", "Wiśniewska", date(1960, 1, 1 + n), n, sex="female"),
            )
    nurse = sign_in(app, "nurse")
    first = nurse.post("/patients", data={"q": "Wiśniewska"})
    assert first.status_code == 200, first.text
    assert "27 patients found. Page 1 of 2." in first.text
    assert "q=" not in first.text and "Wi%C5%9Bniewska" not in first.text
    assert '<form method="post" action="/patients"' in first.text
    assert 'name="page" value="2"' in first.text
    second = nurse.post("/patients", data={"q": "Wiśniewska", "page": "2"})
    assert "Page 2 of 2." in second.text and 'name="page" value="1"' in second.text
    live = nurse.post("/patients", data={"q": "Wiśniewska"}, headers={"HX-Request": "true"})
    assert live.status_code == 200 and "<html" not in live.text and "27 patients found" in live.text

    for bad in ({"q": "x" * 101}, {"q": "a", "page": "0"}, {"q": "a", "page": "two"}):
        assert nurse.post("/patients", data=bad).status_code == 422, bad
    forged = nurse.post("/patients", data={"q": "a"}, headers={"X-CSRF-Token": "forged"})
    assert forged.status_code == 403
    # The whole list (nothing searched for) keeps plain links to its pages.
    listing = nurse.get("/patients")
    assert 'href="/patients?page=2"' in listing.text
