"""Check characters on printed identifiers (ISO/IEC 7064 MOD 37-2) and medical record numbers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regenspine.identifiers import format_mrn, mod37_2_check, mod37_2_valid

CHARSET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"  # value = position; '*' (36) only as check
DATA_CHARSET = CHARSET[:-1]


def test_the_red_book_example_has_check_character_h():
    # UK Blood Services "Red Book", Annex 2: data G123498654321.
    data = "G123498654321"
    weighted_sum = sum(CHARSET.index(ch) * 2 ** (len(data) - i) for i, ch in enumerate(data))
    assert weighted_sum == 148354
    check_value = (38 - weighted_sum % 37) % 37
    assert check_value == 17
    assert CHARSET[check_value] == "H"
    assert mod37_2_check(data) == "H"


def test_the_red_book_example_with_its_check_character_is_valid():
    assert mod37_2_valid("G123498654321H")


@pytest.mark.parametrize("wrong", [c for c in CHARSET if c != "H"])
def test_the_red_book_example_with_any_other_check_character_is_invalid(wrong):
    assert not mod37_2_valid("G123498654321" + wrong)


def test_a_check_value_of_36_is_written_as_an_asterisk():
    # Find a body whose check is '*' by hand-search over two characters, then confirm.
    found = next(
        a + b
        for a in DATA_CHARSET
        for b in DATA_CHARSET
        if (38 - (CHARSET.index(a) * 4 + CHARSET.index(b) * 2) % 37) % 37 == 36
    )
    assert mod37_2_check(found) == "*"
    assert mod37_2_valid(found + "*")


bodies = st.text(alphabet=DATA_CHARSET, min_size=1, max_size=20)


@settings(max_examples=300)
@given(bodies, st.data())
def test_any_single_character_substitution_is_detected(body, data):
    valid = body + mod37_2_check(body)
    assert mod37_2_valid(valid)
    position = data.draw(st.integers(min_value=0, max_value=len(valid) - 1), label="position")
    replacement = data.draw(
        st.sampled_from(CHARSET).filter(lambda c: c != valid[position]), label="replacement"
    )
    typo = valid[:position] + replacement + valid[position + 1 :]
    assert not mod37_2_valid(typo)


@settings(max_examples=200)
@given(st.text(alphabet=DATA_CHARSET, min_size=2, max_size=20), st.data())
def test_swapping_two_neighbouring_characters_is_detected(body, data):
    valid = body + mod37_2_check(body)
    position = data.draw(st.integers(min_value=0, max_value=len(valid) - 2), label="position")
    a, b = valid[position], valid[position + 1]
    if a == b:
        return
    swapped = valid[:position] + b + a + valid[position + 2 :]
    assert not mod37_2_valid(swapped)


def test_the_first_medical_record_number_is_nine_characters_and_valid():
    mrn = format_mrn("RS", 1)
    assert len(mrn) == 9
    assert mrn.startswith("RS000001")
    assert mod37_2_valid(mrn)


def test_different_patients_get_different_check_characters_where_the_body_differs():
    assert format_mrn("RS", 1)[:-1] != format_mrn("RS", 2)[:-1]
    assert mod37_2_valid(format_mrn("RS", 999999))


@pytest.mark.parametrize("data", ["rs000001", "RS-0001", "RS 0001", "A*B", "ZÓŁW", "G12\n3"])
def test_characters_outside_digits_and_capitals_cannot_be_checked(data):
    with pytest.raises(ValueError):
        mod37_2_check(data)


def test_a_lower_case_facility_code_is_refused():
    with pytest.raises(ValueError):
        format_mrn("rs", 1)


@pytest.mark.parametrize("value", ["", "H", "g123498654321H", "G123498654321h", "G12-3498654321H"])
def test_too_short_or_malformed_strings_are_not_valid(value):
    assert mod37_2_valid(value) is False
