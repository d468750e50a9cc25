"""Check characters for identifiers printed on labels (ISO/IEC 7064 MOD 37-2, as ISBT 128 uses)."""

from __future__ import annotations

import re
import unicodedata

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


# ISO/IEC 15424 symbology identifier that a scanner may send before the data: "]", the
# symbology's letter and a modifier, e.g. "]C0" for Code 128.
_SYMBOLOGY_IDENTIFIER = re.compile(r"\][A-Za-z][0-9A-Za-z]")
_MRN_SHAPE = re.compile(r"[A-Z]{2}[0-9]{6,12}[0-9A-Z*]")


def mrn_from_scan(value: str) -> str | None:
    """The medical record number in what a barcode scanner or a person entered, or None.

    Scanners end with Enter or Tab, some frame the data with control characters (STX/ETX) or
    send a symbology identifier first; people type lower case and spaces. All of that is
    removed. What remains must have the shape of a medical record number and a correct check
    character, so a misread or mistyped character is never taken for another patient's number.
    Never raises.
    """
    kept = "".join(
        ch for ch in value if not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf")
    )
    if _SYMBOLOGY_IDENTIFIER.match(kept):
        kept = kept[3:]
    # ASCII only: upper() would turn e.g. the dotless "ı" into "I".
    if not kept.isascii():
        return None
    candidate = kept.upper()
    if not _MRN_SHAPE.fullmatch(candidate) or not mod37_2_valid(candidate):
        return None
    return candidate
