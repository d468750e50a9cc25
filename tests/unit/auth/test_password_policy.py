"""Staff passwords, sign-in throttling and how long a session lasts."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from regenspine.auth.rules import (
    CONTEXT_WORDS,
    PasswordStrength,
    SessionLifetime,
    ThrottlePolicy,
    check_password,
    common_password_count,
    fold,
    session_expired,
    sign_in_locked,
)

LEAKED = "This password appears in lists of leaked passwords; choose another."
CONTAINS_NAME = "The password must not contain your name or username."
PASSPHRASE = "xkcd-tulip-marrow-ferry-quartz"


def problems(strength: PasswordStrength) -> list[str]:
    return [str(message) for message in strength.problems]


def a_leaked_password_of_at_least_12_characters() -> str:
    for candidate in FREQUENCY_LISTS["passwords"]:
        if len(candidate) >= 12:
            return candidate
    raise AssertionError("zxcvbn ships no breached password of 12 or more characters")


def test_at_least_ten_thousand_breached_passwords_are_known():
    assert common_password_count() >= 10_000


def test_a_password_of_11_characters_is_refused():
    strength = check_password("Tq7!vmZ2#pL")
    assert not strength.acceptable
    assert "The password must have at least 12 characters." in problems(strength)


def test_a_password_of_129_characters_is_refused():
    strength = check_password("a-long-phrase-" * 9 + "abc")
    assert not strength.acceptable
    assert "The password may have at most 128 characters." in problems(strength)


LONG_PHRASE = "-".join(["tulip", "marrow", "ferry", "quartz", "lantern", "orbit", "cedar"] * 6)


@pytest.mark.parametrize("length", [72, 73, 100, 128])
def test_a_long_passphrase_up_to_128_characters_is_accepted(length):
    password = LONG_PHRASE[:length]
    assert len(password) == length
    strength = check_password(password)
    assert strength.acceptable, problems(strength)


def test_a_leaked_password_of_twelve_or_more_characters_is_refused():
    leaked = a_leaked_password_of_at_least_12_characters()
    strength = check_password(leaked)
    assert not strength.acceptable
    assert LEAKED in problems(strength)


def test_a_leaked_password_is_refused_whatever_its_capitals_or_surrounding_spaces():
    leaked = a_leaked_password_of_at_least_12_characters()
    for variant in (leaked.upper(), f" {leaked} "):
        assert LEAKED in problems(check_password(variant))


def test_a_password_containing_the_username_is_refused():
    strength = check_password("Zebra-JKowalski-meadow-91", user_inputs=["jkowalski"])
    assert not strength.acceptable
    assert CONTAINS_NAME in problems(strength)


def test_a_password_containing_the_family_name_is_refused():
    strength = check_password(
        "kowalski-orbit-lantern-77", user_inputs=["jkowalski", "Jan", "Kowalski"]
    )
    assert CONTAINS_NAME in problems(strength)


def test_a_long_random_passphrase_is_accepted_as_hard_to_guess():
    strength = check_password(PASSPHRASE, user_inputs=["jkowalski", "Jan Kowalski"])
    assert strength.acceptable, problems(strength)
    assert strength.score >= 3


def test_twelve_characters_that_are_easy_to_guess_are_refused():
    strength = check_password("aaaaaaaaaaaa")
    assert not strength.acceptable
    assert strength.score < 3


POLICY = ThrottlePolicy()


@pytest.mark.parametrize(
    ("account_failures", "ip_failures", "locked"),
    [
        (0, 0, False),
        (4, 0, False),
        (5, 0, True),
        (0, 29, False),
        (0, 30, True),
        (4, 29, False),
        (6, 31, True),
    ],
)
def test_sign_in_locks_after_5_account_or_30_address_failures(
    account_failures, ip_failures, locked
):
    assert sign_in_locked(account_failures, ip_failures, POLICY) is locked


MORNING = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)
LIFETIME = SessionLifetime()


def test_a_session_idle_for_30_minutes_has_ended():
    now = MORNING + timedelta(hours=2)
    assert session_expired(MORNING, now - timedelta(minutes=30), now, LIFETIME) == "idle_timeout"


def test_a_session_idle_for_29_minutes_is_still_open():
    now = MORNING + timedelta(hours=2)
    last_seen = now - timedelta(minutes=29, seconds=59)
    assert session_expired(MORNING, last_seen, now, LIFETIME) is None


def test_a_session_ends_after_12_hours_even_while_in_use():
    now = MORNING + timedelta(hours=12)
    assert session_expired(MORNING, now - timedelta(seconds=5), now, LIFETIME) == (
        "absolute_timeout"
    )


def test_a_busy_session_just_under_12_hours_is_still_open():
    now = MORNING + timedelta(hours=11, minutes=59)
    assert session_expired(MORNING, now - timedelta(minutes=1), now, LIFETIME) is None


def test_a_fresh_session_is_open():
    assert session_expired(MORNING, MORNING, MORNING, LIFETIME) is None


BUILT_ON_CONTEXT = "a word anyone would try here"


@pytest.mark.parametrize(
    "password",
    [
        "Regenspine2026!",
        "Kregoslup#2026",
        "Kręgosłup-2026!",  # Polish letters are compared without their marks
        "Fizj0terapia2026",  # and look-alike digits as the letters they stand for
        "SpineClinic2026!",
        "Szpik-Kostny-2026",
        "Klinika.Regen.2026",
        "Marrow&Spine77",
    ],
)
def test_a_password_built_on_the_clinics_context_words_is_refused(password):
    """ASVS V6.2.11: the product's name and the clinic's work (CONTEXT_WORDS) are what anyone
    who knows where a password is used tries first. Each of these passes the rest of the
    policy; the list is what refuses it, with the word named."""
    assert check_password(password, context_words=()).acceptable
    strength = check_password(password)
    assert not strength.acceptable
    assert BUILT_ON_CONTEXT in problems(strength)[0]
    assert strength.problems[0].params["word"] in {fold(w) for w in CONTEXT_WORDS}


def test_a_context_word_inside_a_phrase_of_unrelated_words_is_accepted():
    strength = check_password("tulip-Spine-volcano-marmalade")
    assert strength.acceptable, problems(strength)


def test_a_clinic_adds_its_own_name_and_town_to_the_context_words():
    own = (*CONTEXT_WORDS, "Przychodnia", "Orłowo", "Gdynia")
    assert check_password("Orlowo-Gdynia-2026!").acceptable
    strength = check_password("Orlowo-Gdynia-2026!", context_words=own)
    assert problems(strength) == [
        'This password is built on "orlowo", a word anyone would try here. Add words of your own '
        "that have nothing to do with the clinic."
    ]


def test_folding_keeps_every_position_so_a_word_is_cut_out_where_it_was_found():
    assert fold("Kręgosłup-2026!") == "kregoslup-2o26!"
    assert len(fold("ąćęłńóśźż0134 57@$")) == len("ąćęłńóśźż0134 57@$")
    assert fold("İstanbul") == "istanbul"  # "İ".lower() has two characters


@given(st.text(max_size=40))
def test_any_text_folds_to_the_same_length_and_is_checked_without_error(text):
    assert len(fold(text)) == len(text)
    check_password(text + "-Regenspine")  # a refusal or an acceptance, never a crash


def test_decomposed_polish_letters_are_compared_as_the_letters_they_make():
    decomposed = unicodedata.normalize("NFD", "Kręgosłup#2026")
    assert decomposed != "Kręgosłup#2026"
    assert BUILT_ON_CONTEXT in problems(check_password(decomposed))[0]
