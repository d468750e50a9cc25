"""PESEL, the Polish national identification number: checksum, encoded birth date and sex.

Rules: digits 1-6 are the birth date with the century added to the month (1800s +80, 1900s +0,
2000s +20, 2100s +40, 2200s +60); digit 10 is even for women and odd for men; digit 11 is a
check digit with weights 1,3,7,9,1,3,7,9,1,3 (Ustawa o ewidencji ludności, art. 15; the
government's PESEL description at gov.pl).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from regenspine.errors import N_

WEIGHTS = (1, 3, 7, 9, 1, 3, 7, 9, 1, 3)
_CENTURY_BY_MONTH_OFFSET = {80: 1800, 0: 1900, 20: 2000, 40: 2100, 60: 2200}


class PeselError(ValueError):
    """The number is not a PESEL; the message says why in plain words."""


@dataclass(frozen=True)
class Pesel:
    number: str
    birth_date: date
    sex: str  # "female" or "male", as FHIR administrative gender


def check_digit(first_ten: str) -> int:
    return (10 - sum(int(d) * w for d, w in zip(first_ten, WEIGHTS, strict=True)) % 10) % 10


def parse_pesel(value: str) -> Pesel:
    number = value.strip()
    if len(number) != 11 or not number.isascii() or not number.isdigit():
        raise PeselError(N_("A PESEL has exactly 11 digits."))
    if check_digit(number[:10]) != int(number[10]):
        raise PeselError(N_("The PESEL check digit is wrong: please re-check the number."))
    yy, mm, dd = int(number[0:2]), int(number[2:4]), int(number[4:6])
    offset = (mm - 1) // 20 * 20
    month = mm - offset
    century = _CENTURY_BY_MONTH_OFFSET.get(offset)
    if century is None or not 1 <= month <= 12:
        raise PeselError(N_("The PESEL does not contain a valid date of birth."))
    try:
        birth = date(century + yy, month, dd)
    except ValueError as exc:
        raise PeselError(N_("The PESEL does not contain a valid date of birth.")) from exc
    return Pesel(number, birth, "male" if int(number[9]) % 2 else "female")


def make_pesel(birth: date, serial: int, sex: str) -> str:
    """Builds a valid PESEL (used for synthetic demo patients and tests)."""
    offsets = {1800: 80, 1900: 0, 2000: 20, 2100: 40, 2200: 60}
    century = birth.year // 100 * 100
    month = birth.month + offsets[century]
    serial = serial % 1000
    sex_digit_choices = (1, 3, 5, 7, 9) if sex == "male" else (0, 2, 4, 6, 8)
    sex_digit = sex_digit_choices[serial % 5]
    first_ten = f"{birth.year % 100:02d}{month:02d}{birth.day:02d}{serial:03d}{sex_digit}"
    return first_ten + str(check_digit(first_ten))
