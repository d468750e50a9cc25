"""TOTP matching (RFC 6238): the step a code belongs to, within the drift window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp
from hypothesis import given, settings
from hypothesis import strategies as st

from regenspine.auth.service import matching_totp_step

SECRET = pyotp.random_base32()
MOMENTS = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2060, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=200, deadline=None)
@given(MOMENTS, st.sampled_from([-1, 0, 1]))
def test_a_code_from_the_window_gives_the_step_it_belongs_to(at, offset):
    totp = pyotp.TOTP(SECRET)
    moment = at + timedelta(seconds=offset * totp.interval)
    step = matching_totp_step(SECRET, totp.at(moment), at)
    assert step is not None
    # a code may repeat by chance in a neighbouring step; then the later step is reported
    assert step >= totp.timecode(moment)


@settings(max_examples=200, deadline=None)
@given(MOMENTS, st.sampled_from([-3, -2, 2, 3]))
def test_a_code_from_outside_the_window_is_refused_unless_it_repeats_by_chance(at, offset):
    totp = pyotp.TOTP(SECRET)
    code = totp.at(at + timedelta(seconds=offset * totp.interval))
    window = {totp.at(at + timedelta(seconds=k * totp.interval)) for k in (-1, 0, 1)}
    assert (matching_totp_step(SECRET, code, at) is None) == (code not in window)


def test_text_that_is_no_code_matches_nothing():
    now = datetime.now(UTC)
    for code in ["", "12345", "1234567", "abcdef", "12 456"]:
        assert matching_totp_step(SECRET, code, now) is None
