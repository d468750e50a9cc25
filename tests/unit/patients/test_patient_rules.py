"""What the clinic accepts as a patient's identity data at registration and amendment."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regenspine.errors import InvalidInput
from regenspine.patients.rules import (
    PATIENT_FIELDS,
    IdentifierType,
    Sex,
    normalise_for_search,
    parse_date,
    validate_patient,
    validate_reason,
)

TODAY = date(2025, 1, 15)


def registration(**changes: str) -> dict[str, str]:
    """A man born 14 May 1944 registering with the published PESEL example."""
    form = {
        "given_name": "Jan",
        "family_name": "Kowalski",
        "date_of_birth": "1944-05-14",
        "sex": "male",
        "id_type": "pesel",
        "national_id": "44051401458",
    }
    form.update(changes)
    return form


def refusal(form: dict[str, str]) -> dict[str, str]:
    """The field errors, rendered in English, of a form that must be refused."""
    with pytest.raises(InvalidInput) as refused:
        validate_patient(form, TODAY)
    return {field: str(message) for field, message in refused.value.field_errors.items()}


def test_a_complete_registration_is_accepted():
    patient = validate_patient(
        registration(
            phone="+48 600 100 200",
            email="jan.kowalski@example.com",
            postal_code="00-950",
            city="Warszawa",
            country="pl",
            preferred_language="en",
            address="ul. Marszałkowska 1",
            emergency_contact_name="Anna Kowalska",
            emergency_contact_phone="600 300 400",
        ),
        TODAY,
    )
    assert patient.given_name == "Jan"
    assert patient.family_name == "Kowalski"
    assert patient.date_of_birth == date(1944, 5, 14)
    assert patient.sex is Sex.MALE
    assert patient.id_type is IdentifierType.PESEL
    assert patient.national_id == "44051401458"
    assert patient.id_country == "PL"
    assert patient.country == "PL"
    assert patient.preferred_language == "en"
    assert patient.email == "jan.kowalski@example.com"
    assert patient.city == "Warszawa"


def test_registration_normalises_spacing_and_fills_sensible_defaults():
    patient = validate_patient(
        registration(
            given_name="  Jan ",
            national_id=" 440 514 014 58 ",
            date_of_birth="14.05.1944",
            email="",
        ),
        TODAY,
    )
    assert patient.given_name == "Jan"
    assert patient.national_id == "44051401458"
    assert patient.date_of_birth == date(1944, 5, 14)
    assert patient.email is None
    assert patient.phone is None
    assert patient.preferred_language == "pl"


def test_a_name_typed_with_a_separate_accent_is_stored_composed():
    patient = validate_patient(registration(family_name="Zio\u0301łkowski"), TODAY)
    assert patient.family_name == "Ziółkowski"


def test_each_missing_required_field_is_named():
    errors = refusal({})
    assert {"given_name", "family_name", "date_of_birth", "sex", "id_type"} <= set(errors)
    assert errors["given_name"] == "This field is required."


def test_a_date_of_birth_in_the_future_is_refused():
    errors = refusal(registration(id_type="none", date_of_birth="2025-01-16"))
    assert set(errors) == {"date_of_birth"}
    assert "cannot be in the future" in errors["date_of_birth"]


def test_a_baby_born_today_can_be_registered():
    patient = validate_patient(registration(id_type="none", date_of_birth="2025-01-15"), TODAY)
    assert patient.date_of_birth == TODAY
    assert patient.national_id is None


def test_a_date_of_birth_before_1900_is_queried():
    errors = refusal(registration(id_type="none", date_of_birth="1899-12-31"))
    assert set(errors) == {"date_of_birth"}


def test_an_unreadable_date_of_birth_is_refused_with_an_example():
    errors = refusal(registration(date_of_birth="14 May 1944"))
    assert "1975-03-21" in errors["date_of_birth"]


def test_a_name_of_100_characters_is_accepted_but_101_is_refused():
    assert validate_patient(registration(family_name="A" * 100), TODAY).family_name == "A" * 100
    errors = refusal(registration(family_name="A" * 101))
    assert set(errors) == {"family_name"}
    assert "100" in errors["family_name"]


@pytest.mark.parametrize("name", ["Anna-Maria", "O'Brien", "Łukasz", "Żółć", "Müller", "Jr."])
def test_real_names_with_hyphens_apostrophes_and_diacritics_are_accepted(name):
    assert validate_patient(registration(given_name=name), TODAY).given_name == name


@pytest.mark.parametrize(
    "name",
    [
        "Jan2",
        "R2D2",
        "<script>alert(1)</script>",
        "Jan<b>",
        "Robert'); DROP TABLE patients;--",
        "Anna_Maria",
        "Anna\nMaria",
        "Anna٣",  # an Arabic-Indic digit three
    ],
)
def test_a_name_with_digits_or_markup_is_refused(name):
    errors = refusal(registration(given_name=name))
    assert set(errors) == {"given_name"}


@pytest.mark.parametrize("name", ["Jan²", "Anna½"])
def test_a_name_with_a_superscript_or_fraction_digit_is_refused(name):
    errors = refusal(registration(given_name=name))
    assert set(errors) == {"given_name"}


def test_a_pesel_whose_birth_date_differs_from_the_entered_one_is_refused_naming_both():
    errors = refusal(registration(date_of_birth="1944-05-15"))
    assert set(errors) == {"national_id"}
    assert "1944-05-14" in errors["national_id"]
    assert "1944-05-15" in errors["national_id"]


def test_a_pesel_of_a_man_for_a_patient_registered_as_a_woman_is_refused():
    errors = refusal(registration(sex="female"))
    assert set(errors) == {"national_id"}
    assert "encodes the sex Male" in errors["national_id"]
    assert "but Female was chosen" in errors["national_id"]


@pytest.mark.parametrize("sex", ["other", "unknown"])
def test_sex_other_or_unknown_is_accepted_alongside_a_pesel(sex):
    assert validate_patient(registration(sex=sex), TODAY).sex == sex


def test_a_sex_outside_the_fhir_list_is_refused():
    assert set(refusal(registration(sex="m"))) == {"sex"}


def test_a_pesel_with_a_wrong_check_digit_is_refused_on_the_identifier_field():
    errors = refusal(registration(national_id="44051401459"))
    assert set(errors) == {"national_id"}
    assert "check digit" in errors["national_id"]


def test_choosing_pesel_without_a_number_is_refused():
    assert set(refusal(registration(national_id=""))) == {"national_id"}


@pytest.mark.parametrize("field", ["is_admin", "mrn", "id", "given_name "])
def test_fields_outside_the_allow_list_are_refused_by_name(field):
    form = registration()
    form[field] = "x"
    errors = refusal(form)
    assert set(errors) == {"_form"}
    assert field in errors["_form"]


def test_a_passport_needs_a_document_number_and_a_two_letter_country():
    errors = refusal(registration(id_type="passport", national_id="", id_country=""))
    assert set(errors) == {"national_id", "id_country"}


def test_a_passport_with_a_number_and_country_is_accepted_and_upper_cased():
    patient = validate_patient(
        registration(id_type="passport", national_id="c01x 00t47", id_country="de"), TODAY
    )
    assert patient.id_type is IdentifierType.PASSPORT
    assert patient.national_id == "C01X00T47"
    assert patient.id_country == "DE"


@pytest.mark.parametrize("country", ["DEU", "D", "1A", "Deutschland"])
def test_a_passport_country_that_is_not_two_letters_is_refused(country):
    errors = refusal(registration(id_type="passport", national_id="C01X00T47", id_country=country))
    assert set(errors) == {"id_country"}


@pytest.mark.parametrize("number", ["AB1", "C01X/00T47", "<script>", "A" * 21])
def test_a_passport_number_outside_4_to_20_letters_or_digits_is_refused(number):
    errors = refusal(registration(id_type="passport", national_id=number, id_country="DE"))
    assert set(errors) == {"national_id"}


def test_no_identifier_discards_any_number_that_was_typed():
    patient = validate_patient(
        registration(id_type="none", national_id="12345", id_country="DE"), TODAY
    )
    assert patient.national_id is None
    assert patient.id_country is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "jan.kowalski"),
        ("email", "jan@kowalski"),
        ("email", "jan kowalski@example.com"),
        ("phone", "call me"),
        ("phone", "12345"),
        ("emergency_contact_phone", "+48 600 100 200 ext. 7"),
        ("postal_code", "<b>00-950</b>"),
        ("postal_code", "0"),
        ("country", "Poland"),
        ("preferred_language", "de"),
        ("address", "ul. Długa 1\x00"),
        ("city", "W" * 201),
    ],
)
def test_a_bad_contact_detail_is_refused_on_its_own_field(field, value):
    assert set(refusal(registration(**{field: value}))) == {field}


def test_every_error_is_keyed_by_the_field_it_is_about():
    errors = refusal(
        registration(
            given_name="J4n",
            family_name="",
            sex="?",
            email="no",
            phone="no",
            postal_code="!!",
            country="POL",
            preferred_language="xx",
        )
    )
    assert set(errors) == {
        "given_name",
        "family_name",
        "sex",
        "email",
        "phone",
        "postal_code",
        "country",
        "preferred_language",
    }


def test_search_ignores_polish_diacritics_and_case():
    assert normalise_for_search("Łukasz Żółć") == "lukasz zolc"
    assert normalise_for_search("  ŚWIĘTOKRZYSKA ") == "swietokrzyska"


@pytest.mark.parametrize("text", ["1975-03-21", "21.03.1975", " 21.3.1975 "])
def test_dates_are_read_in_iso_and_polish_notation(text):
    assert parse_date(text) == date(1975, 3, 21)


@pytest.mark.parametrize(
    "text", ["1975-02-30", "30.02.1975", "1975-13-01", "03/21/1975", "21.03.75", "", "tomorrow"]
)
def test_impossible_or_unfamiliar_dates_are_not_read(text):
    assert parse_date(text) is None


@pytest.mark.parametrize("reason", ["", "typo", "  abc  ", "x" * 501])
def test_a_correction_reason_outside_5_to_500_characters_is_refused(reason):
    with pytest.raises(InvalidInput) as refused:
        validate_reason(reason)
    assert set(refused.value.field_errors) == {"reason"}


def test_a_correction_reason_of_five_characters_is_kept_trimmed():
    assert validate_reason("  typo! ") == "typo!"


field_names = st.one_of(st.sampled_from(PATIENT_FIELDS), st.text(max_size=12))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(field_names, st.text(max_size=40), max_size=20))
def test_any_form_of_text_is_either_accepted_or_refused_with_field_errors(form):
    try:
        validate_patient(form, TODAY)
    except InvalidInput as refused:
        assert refused.field_errors


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(PATIENT_FIELDS),
        st.one_of(
            st.text(max_size=30),
            st.sampled_from(["pesel", "passport", "id_card", "none", "female", "male", "other"]),
            st.from_regex(r"\A[0-9]{11}\Z"),
            st.from_regex(r"\A[0-9]{1,2}\.[0-9]{1,2}\.[0-9]{4}\Z"),
        ),
        max_size=8,
    )
)
def test_any_change_to_a_valid_form_is_either_accepted_or_refused_with_field_errors(changes):
    try:
        validate_patient(registration(**changes), TODAY)
    except InvalidInput as refused:
        assert refused.field_errors


def test_a_pesel_sex_mismatch_reads_in_polish_with_polish_names_for_the_sexes():
    from regenspine.i18n import gettext_for

    pl = gettext_for("pl")
    with pytest.raises(InvalidInput) as refused:
        validate_patient(registration(sex="female"), TODAY)
    text = refused.value.field_errors["national_id"].render(pl)
    assert "male" not in text.lower()
    assert pl("Male") in text and pl("Female") in text
    assert pl("Male") != "Male"


@pytest.mark.parametrize("name", ["Mаrek", "Jаn", "Κowalski"])  # Cyrillic а, Greek Κ
def test_a_name_mixing_look_alike_letters_of_two_alphabets_is_refused(name):
    """Otherwise "Mаrek Nowak" slips past the check for a patient registered twice."""
    errors = refusal(registration(given_name=name))
    assert set(errors) == {"given_name"} and "one alphabet" in errors["given_name"]


@pytest.mark.parametrize("name", ["Олена", "Αλέξανδρος", "Łukasz"])
def test_a_name_in_one_alphabet_other_than_latin_is_accepted(name):
    assert validate_patient(registration(given_name=name), TODAY).given_name == name


@pytest.mark.parametrize("code", ["ZZ", "QQ", "EU", "UN", "XA"])
def test_a_country_code_that_is_no_country_is_refused(code):
    errors = refusal(registration(country=code))
    assert set(errors) == {"country"}
    errors = refusal(registration(id_type="passport", national_id="C01X00T47", id_country=code))
    assert set(errors) == {"id_country"}


@pytest.mark.parametrize("code", ["PL", "UA", "DE", "XK"])
def test_a_real_country_code_is_accepted(code):
    assert validate_patient(registration(country=code), TODAY).country == code


@pytest.mark.parametrize(
    ("field", "value"),
    [("address", "\u202egnirtS 5"), ("city", "Kra\u200bków"), ("emergency_contact_name", "A\x07")],
)
def test_invisible_formatting_and_control_characters_are_refused_in_the_address(field, value):
    errors = refusal(registration(**{field: value}))
    assert set(errors) == {field}
