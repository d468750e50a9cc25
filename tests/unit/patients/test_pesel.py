"""PESEL numbers: check digit, birth date with the century in the month, and sex."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regenspine.patients.pesel import PeselError, make_pesel, parse_pesel

# The published weights, written out here so the tests do not lean on the module's own table.
PUBLISHED_WEIGHTS = (1, 3, 7, 9, 1, 3, 7, 9, 1, 3)

CHECK_DIGIT_MESSAGE = "The PESEL check digit is wrong: please re-check the number."
LENGTH_MESSAGE = "A PESEL has exactly 11 digits."
DATE_MESSAGE = "The PESEL does not contain a valid date of birth."


def with_check_digit(first_ten: str) -> str:
    """Completes ten digits into a PESEL the way the gov.pl description explains it."""
    assert len(first_ten) == 10 and first_ten.isdigit()
    total = sum(int(d) * w for d, w in zip(first_ten, PUBLISHED_WEIGHTS, strict=True))
    return first_ten + str((10 - total % 10) % 10)


def test_the_published_example_is_a_man_born_on_14_may_1944():
    pesel = parse_pesel("44051401458")
    assert pesel.birth_date == date(1944, 5, 14)
    assert pesel.sex == "male"
    assert pesel.number == "44051401458"


def test_the_hand_built_check_digit_of_the_published_example_is_8():
    # Guards the helper the other tests rely on: 4+12+0+45+1+12+0+9+4+15 = 102 -> 10 - 2 = 8.
    assert with_check_digit("4405140145") == "44051401458"


def test_an_even_tenth_digit_means_a_woman():
    pesel = parse_pesel(with_check_digit("8512240312"))
    assert pesel.sex == "female"
    assert pesel.birth_date == date(1985, 12, 24)


@pytest.mark.parametrize("wrong_last_digit", [d for d in "0123456789" if d != "8"])
def test_a_wrong_check_digit_is_refused_with_the_check_digit_message(wrong_last_digit):
    with pytest.raises(PeselError) as refused:
        parse_pesel("4405140145" + wrong_last_digit)
    assert str(refused.value) == CHECK_DIGIT_MESSAGE


@pytest.mark.parametrize(
    "value",
    [
        "",
        "4405140145",  # ten digits
        "440514014580",  # twelve digits
        "4405140145A",  # a letter
        "44-05-14-01458",
        "٤٤٠٥١٤٠١٤٥٨",  # Arabic-Indic digits are digits to Python, but not PESEL digits
        "44051401458.0",
    ],
)
def test_a_number_that_is_not_eleven_ascii_digits_is_refused(value):
    with pytest.raises(PeselError) as refused:
        parse_pesel(value)
    assert str(refused.value) == LENGTH_MESSAGE


def test_surrounding_spaces_are_ignored():
    assert parse_pesel("  44051401458 ").number == "44051401458"


@pytest.mark.parametrize(
    "first_ten",
    [
        "4413140145",  # month 13
        "4400140145",  # month 00
        "9002300145",  # 30 February 1990
        "0002290145",  # 29 February 1900: 1900 was not a leap year
        "0042290145",  # 29 February 2100: nor will 2100 be
        "4405320145",  # 32 May
        "4405000145",  # day 0
        "4493140145",  # month field 93 = 1800s + 13
    ],
)
def test_a_pesel_with_an_impossible_birth_date_is_refused(first_ten):
    with pytest.raises(PeselError) as refused:
        parse_pesel(with_check_digit(first_ten))
    assert str(refused.value) == DATE_MESSAGE


def test_29_february_2000_is_a_real_birthday():
    assert parse_pesel(with_check_digit("0022290145")).birth_date == date(2000, 2, 29)


@pytest.mark.parametrize(
    ("first_ten", "born"),
    [
        ("5083071234", date(1850, 3, 7)),  # 1800s: month + 80
        ("9992311234", date(1899, 12, 31)),
        ("0001011234", date(1900, 1, 1)),  # 1900s: month as is
        ("0332311234", date(2003, 12, 31)),  # 2000s: month + 20
        ("5041011234", date(2150, 1, 1)),  # 2100s: month + 40
        ("9972311234", date(2299, 12, 31)),  # 2200s: month + 60
        ("0061011234", date(2200, 1, 1)),
    ],
)
def test_the_century_is_decoded_from_the_month(first_ten, born):
    assert parse_pesel(with_check_digit(first_ten)).birth_date == born


births = st.dates(min_value=date(1800, 1, 1), max_value=date(2299, 12, 31))
sexes = st.sampled_from(["female", "male"])


@settings(max_examples=200)
@given(birth=births, serial=st.integers(min_value=0, max_value=10**6), sex=sexes)
def test_a_made_up_pesel_reads_back_as_the_same_birth_date_and_sex(birth, serial, sex):
    number = make_pesel(birth, serial, sex)
    assert len(number) == 11 and number.isdigit()
    pesel = parse_pesel(number)
    assert pesel.birth_date == birth
    assert pesel.sex == sex


@settings(max_examples=200)
@given(
    birth=births,
    serial=st.integers(min_value=0, max_value=999),
    sex=sexes,
    position=st.integers(min_value=0, max_value=10),
    shift=st.integers(min_value=1, max_value=9),
)
def test_a_single_mistyped_digit_is_always_caught(birth, serial, sex, position, shift):
    number = make_pesel(birth, serial, sex)
    parse_pesel(number)  # the original is valid
    mistyped = str((int(number[position]) + shift) % 10)
    typo = number[:position] + mistyped + number[position + 1 :]
    assert typo != number
    with pytest.raises(PeselError) as refused:
        parse_pesel(typo)
    assert str(refused.value) == CHECK_DIGIT_MESSAGE


@settings(max_examples=300)
@given(st.one_of(st.text(), st.from_regex(r"\A\s*[0-9]{11}\s*\Z")))
def test_reading_any_text_either_succeeds_or_says_why_it_is_not_a_pesel(value):
    try:
        pesel = parse_pesel(value)
    except PeselError:
        return
    assert len(pesel.number) == 11 and pesel.number.isdigit()
    assert pesel.sex in ("female", "male")
