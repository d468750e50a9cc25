"""Check characters on printed identifiers (ISO/IEC 7064 MOD 37-2) and medical record numbers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regenspine.identifiers import format_mrn, mod37_2_check, mod37_2_valid, mrn_from_scan

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


# --- reading a medical record number from a barcode scanner or the keyboard --------------------


@settings(max_examples=300)
@given(st.text())
def test_checking_any_text_answers_yes_or_no_and_never_raises(value):
    assert mod37_2_valid(value) in (True, False)


def _is_a_valid_mrn(value: str) -> bool:
    # Written out from the README: two capitals, six or more digits, one MOD 37-2 check character.
    return (
        value.isascii()
        and value[:2].isalpha()
        and value[:2].isupper()
        and value[2:-1].isdigit()
        and mod37_2_valid(value)
    )


@settings(max_examples=500)
@given(st.one_of(st.text(), st.text(alphabet=CHARSET + "rs]C0 \n\t\x02\x03", max_size=16)))
def test_reading_any_scan_gives_a_valid_record_number_or_nothing_and_never_raises(value):
    """ASVS 5.0 V2.2.1: scanner input is checked against the number's format and check character."""
    mrn = mrn_from_scan(value)
    assert mrn is None or _is_a_valid_mrn(mrn)


facility_codes = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2)
record_numbers = st.integers(min_value=0, max_value=999_999)
# What scanners and keyboards really add: Enter (CR, LF or both), Tab, STX/ETX framing, the
# GS separator, spaces, and the ISO/IEC 15424 identifier "]C0" of Code 128.
scanner_prefixes = st.sampled_from(["", " ", "\t", "\x02", "]C0", "\x02]C0", "\ufeff"])
scanner_suffixes = st.sampled_from(["", "\n", "\r", "\r\n", "\t", "\x03", "\x03\r\n", "\x1d", " "])


@settings(max_examples=300)
@given(facility_codes, record_numbers, scanner_prefixes, scanner_suffixes, st.booleans())
def test_a_printed_record_number_reads_back_exactly_whatever_the_scanner_adds(
    facility, number, prefix, suffix, lower
):
    """ASVS 5.0 V2.2.1: what scanners add is normalised away, the number itself is kept."""
    printed = format_mrn(facility, number)
    scanned = prefix + (printed.lower() if lower else printed) + suffix
    assert mrn_from_scan(scanned) == printed


@settings(max_examples=300)
@given(facility_codes, record_numbers, st.data())
def test_a_record_number_with_one_wrong_character_is_never_read_as_a_number(facility, number, data):
    printed = format_mrn(facility, number)
    position = data.draw(st.integers(min_value=0, max_value=len(printed) - 1), label="position")
    replacement = data.draw(
        st.sampled_from(CHARSET).filter(lambda c: c != printed[position]), label="replacement"
    )
    misread = printed[:position] + replacement + printed[position + 1 :]
    assert mrn_from_scan(misread + "\r\n") is None


@settings(max_examples=200)
@given(facility_codes, record_numbers, st.data())
def test_a_record_number_with_two_neighbours_swapped_is_never_read_as_a_number(
    facility, number, data
):
    printed = format_mrn(facility, number)
    position = data.draw(st.integers(min_value=0, max_value=len(printed) - 2), label="position")
    a, b = printed[position], printed[position + 1]
    if a == b:
        return
    swapped = printed[:position] + b + a + printed[position + 2 :]
    assert mrn_from_scan(swapped) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "]C0",
        "RS000001",  # the check character is missing
        "RS00001B",  # five digits
        "R5000001B",  # a digit where a letter belongs
        "ЯS000001B",  # a Cyrillic letter that looks Latin
        "rs000001\u0131",  # dotless i: upper() would make it "I"
        "RS０００００１B",  # full-width digits
        "]C0]C0RS000001B",  # one symbology identifier only
    ],
)
def test_text_that_is_not_a_record_number_reads_as_nothing(value):
    assert mrn_from_scan(value) is None


def test_the_first_record_number_is_read_from_a_code_128_scan_with_identifier_and_enter():
    assert format_mrn("RS", 1) == "RS000001B"  # the check character worked out by hand below
    # B = 11: RS000001 -> p runs 27*2=54%37=17, (17+28)*2=90%37=16, 16*2=32, 64%37=27,
    # 54%37=17, 34, 68%37=31, (31+1)*2=64%37=27; (38-27)%37 = 11.
    assert mrn_from_scan("]C0RS000001B\r\n") == "RS000001B"
