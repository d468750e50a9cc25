"""Recovery codes (ASVS 5.0 V6.5.2): a lookup secret kept as a plain hash needs at least 112
bits of entropy, and a person types it from paper, so case, spaces and dashes do not matter.
One-time passwords of an administrator's reset (V6.4.1) follow the password policy."""

from __future__ import annotations

import base64
import re

from hypothesis import given
from hypothesis import strategies as st

from regenspine.auth.rules import check_password
from regenspine.auth.service import (
    RECOVERY_CODE_BYTES,
    new_one_time_password,
    new_recovery_code,
    recovery_code_hash,
    sha256_hex,
)

SHAPE = re.compile(r"^[a-z2-7]{4}(-[a-z2-7]{4}){5}$")


def test_a_recovery_code_carries_120_random_bits_in_six_groups_of_four():
    assert RECOVERY_CODE_BYTES * 8 >= 112
    codes = {new_recovery_code() for _ in range(2000)}
    assert len(codes) == 2000  # no repeats: the bits really are random
    for code in codes:
        assert SHAPE.match(code), code
        decoded = base64.b32decode(code.replace("-", "").upper())
        assert len(decoded) == RECOVERY_CODE_BYTES
    # Every character of the alphabet appears: nothing narrows the code's space.
    assert set("".join(codes).replace("-", "")) == set("abcdefghijklmnopqrstuvwxyz234567")


def test_a_code_matches_however_it_is_typed_and_only_itself():
    code = new_recovery_code()
    stored = recovery_code_hash(code)
    for typed in (code, code.upper(), code.replace("-", " "), f"  {code.replace('-', '')}  "):
        assert recovery_code_hash(typed) == stored
    assert recovery_code_hash(new_recovery_code()) != stored
    assert stored != sha256_hex(code)  # the dashes are not part of what is kept


def test_codes_issued_before_the_longer_format_still_work():
    """Earlier codes were 10 hex digits, stored as the SHA-256 of the code as shown."""
    old = "3f9a0c21be"
    assert recovery_code_hash(old.upper()) == sha256_hex(old)


@given(st.text(max_size=60))
def test_any_typed_text_hashes_without_error(typed: str):
    assert re.fullmatch(r"[0-9a-f]{64}", recovery_code_hash(typed))


def test_one_time_passwords_meet_the_password_policy_and_carry_100_random_bits():
    """ASVS 5.0 V6.4.1: a password an administrator's reset generates follows the password
    policy and is random: 20 base32 characters (100 bits) in five groups of four."""
    passwords = {new_one_time_password() for _ in range(300)}
    assert len(passwords) == 300
    for password in passwords:
        assert re.fullmatch(r"[a-z2-7]{4}(-[a-z2-7]{4}){4}", password), password
        assert check_password(password, ("nurse", "Test", "Nurse")).acceptable, password
