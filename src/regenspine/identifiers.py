"""Check characters for identifiers printed on labels (ISO/IEC 7064 MOD 37-2, as ISBT 128 uses)."""

from __future__ import annotations

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"
_VALUES = {c: i for i, c in enumerate(ALPHABET)}


def mod37_2_check(data: str) -> str:
    """The check character over data (digits and capital letters).

    Worked example from the UK Blood Services "Red Book" Annex 2: G123498654321 -> H.
    """
    p = 0
    for ch in data:
        if ch not in _VALUES or ch == "*":
            raise ValueError(f"character {ch!r} cannot be checked with MOD 37-2")
        p = ((p + _VALUES[ch]) * 2) % 37
    return ALPHABET[(38 - p) % 37]


def mod37_2_valid(data_with_check: str) -> bool:
    if len(data_with_check) < 2:
        return False
    body, check = data_with_check[:-1], data_with_check[-1]
    try:
        return mod37_2_check(body) == check
    except ValueError:
        return False


def format_mrn(facility_code: str, number: int) -> str:
    """Medical record number: facility letters, six digits, one check character (Code 128-safe)."""
    body = f"{facility_code}{number:06d}"
    return body + mod37_2_check(body)
