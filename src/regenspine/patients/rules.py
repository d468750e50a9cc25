"""Pure rules for patient identity data: the allow-listed fields and what makes each valid."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any

from babel import Locale

from regenspine.errors import N_, InvalidInput, Message
from regenspine.patients.pesel import PeselError, parse_pesel
from regenspine.text import EMAIL_PATTERN, has_blank_letters, refuse_reordering


class Sex(StrEnum):
    """FHIR R4 AdministrativeGender (http://hl7.org/fhir/administrative-gender)."""

    FEMALE = "female"
    MALE = "male"
    OTHER = "other"
    UNKNOWN = "unknown"


class IdentifierType(StrEnum):
    PESEL = "pesel"
    PASSPORT = "passport"
    NATIONAL_ID_CARD = "id_card"
    NONE = "none"


SEX_LABELS = {
    Sex.FEMALE: N_("Female"),
    Sex.MALE: N_("Male"),
    Sex.OTHER: N_("Other"),
    Sex.UNKNOWN: N_("Unknown"),
}
IDENTIFIER_LABELS = {
    IdentifierType.PESEL: N_("PESEL"),
    IdentifierType.PASSPORT: N_("Passport"),
    IdentifierType.NATIONAL_ID_CARD: N_("Foreign national identity card"),
    IdentifierType.NONE: N_("No identifier (explain in the amendment history)"),
}
FIELD_LABELS: dict[str, str] = {
    "given_name": N_("Given name"),
    "family_name": N_("Family name"),
    "date_of_birth": N_("Date of birth"),
    "sex": N_("Sex"),
    "id_type": N_("Identifier type"),
    "national_id": N_("Identifier number"),
    "id_country": N_("Issuing country"),
    "phone": N_("Phone"),
    "email": N_("Email"),
    "preferred_language": N_("Preferred language"),
    "address": N_("Street address"),
    "postal_code": N_("Postal code"),
    "city": N_("City"),
    "country": N_("Country"),
    "emergency_contact_name": N_("Emergency contact name"),
    "emergency_contact_phone": N_("Emergency contact phone"),
}
PATIENT_FIELDS: tuple[str, ...] = tuple(FIELD_LABELS)
REQUIRED_FIELDS = ("given_name", "family_name", "date_of_birth", "sex", "id_type")

NAME_MAX = 100
NAME_SEPARATORS = " '-.\u2019"
PHONE_PATTERN = re.compile(r"^\+?[0-9 ()\-]{6,25}$")
POSTAL_PATTERN = re.compile(r"^[A-Za-z0-9 \-]{2,12}$")
COUNTRY_PATTERN = re.compile(r"^[A-Z]{2}$")
# ISO 3166-1 alpha-2: the two-letter territories of the Unicode CLDR (as shipped with Babel)
# less those ISO only reserves or that stand for no country (Ascension, the EU, the UN,
# "unknown region" ZZ, ...): 249 codes, plus XK, the code Kosovo's documents carry.
COUNTRY_CODES = frozenset(
    code for code in map(str, Locale("en").territories) if COUNTRY_PATTERN.match(code)
) - {"AC", "CP", "CQ", "DG", "EA", "EU", "EZ", "IC", "QO", "TA", "UN", "XA", "XB", "ZZ"}
DOCUMENT_PATTERN = re.compile(r"^[A-Z0-9\-]{4,20}$")
FREE_TEXT_MAX = 200
OLDEST_BIRTH_YEAR = 1900


@dataclass(frozen=True)
class PatientData:
    """Validated identity data, ready to store."""

    given_name: str
    family_name: str
    date_of_birth: date
    sex: Sex
    id_type: IdentifierType
    national_id: str | None
    id_country: str | None
    phone: str | None
    email: str | None
    preferred_language: str
    address: str | None
    postal_code: str | None
    city: str | None
    country: str | None
    emergency_contact_name: str | None
    emergency_contact_phone: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def normalise_for_search(text: str) -> str:
    """Lowercase without diacritics, so "Łukasz Żółć" is found by typing "lukasz zolc"."""
    text = text.replace("ł", "l").replace("Ł", "L")
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower().strip()


def is_plausible_name(value: str) -> bool:
    """Letters (any script, with combining marks) and single separators such as "O'Brien",
    "Anna-Maria" or "St. John"; no digits of any kind, no symbols, no letter that shows
    as nothing."""
    if not value or unicodedata.category(value[0])[0] != "L" or has_blank_letters(value):
        return False
    previous_separator = False
    prev = ""
    for ch in value:
        category = unicodedata.category(ch)
        if category[0] in ("L", "M"):
            previous_separator = False
        elif ch in NAME_SEPARATORS:
            # "St. John": a full stop may be followed by one space; otherwise one separator.
            if previous_separator and not (ch == " " and prev == "."):
                return False
            previous_separator = True
        else:
            return False
        prev = ch
    return value[-1] not in " -'\u2019"


def scripts_of(value: str) -> set[str]:
    """The alphabets a name's letters come from ("LATIN", "CYRILLIC", "GREEK", ...)."""
    return {
        unicodedata.name(ch, "UNKNOWN").split(" ")[0]
        for ch in value
        if unicodedata.category(ch)[0] == "L"
    }


def _text(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if value is None:
        return ""
    return unicodedata.normalize("NFC", str(value)).strip()


def parse_date(value: str) -> date | None:
    value = value.strip()
    # ASCII digits only: Python's \d would also accept other scripts' digits.
    for pattern in (
        r"^([0-9]{4})-([0-9]{2})-([0-9]{2})$",
        r"^([0-9]{1,2})\.([0-9]{1,2})\.([0-9]{4})$",
    ):
        m = re.match(pattern, value)
        if m:
            parts = [int(g) for g in m.groups()]
            y, mo, d = parts if pattern.startswith(r"^([0-9]{4})") else parts[::-1]
            try:
                return date(y, mo, d)
            except ValueError:
                return None
    return None


def validate_patient(raw: Mapping[str, Any], today: date) -> PatientData:
    """Checks every field against its allow-list; raises InvalidInput naming each bad field."""
    unknown = set(raw) - set(PATIENT_FIELDS)
    errors: dict[str, Message] = {}
    if unknown:
        errors["_form"] = Message(
            N_("Unknown fields were sent: %(fields)s."), fields=", ".join(sorted(unknown))
        )
    values = {k: _text(raw, k) for k in PATIENT_FIELDS}
    for key in REQUIRED_FIELDS:
        if not values[key]:
            errors[key] = Message(N_("This field is required."))

    for key in ("given_name", "family_name"):
        v = values[key]
        if v and len(v) > NAME_MAX:
            errors[key] = Message(N_("A name may have at most %(max)d characters."), max=NAME_MAX)
        elif v and not is_plausible_name(v):
            errors[key] = Message(
                N_("A name may contain letters, spaces, hyphens and apostrophes only.")
            )
        elif len(scripts_of(v)) > 1:
            # "Mаrek" with a Cyrillic "а" looks like "Marek" but would slip past the check for
            # a patient registered twice.
            errors[key] = Message(
                N_(
                    "Write the name in one alphabet: it mixes letters of different alphabets "
                    "that look alike (for example Latin and Cyrillic)."
                )
            )

    dob = parse_date(values["date_of_birth"]) if values["date_of_birth"] else None
    if values["date_of_birth"] and dob is None:
        errors["date_of_birth"] = Message(
            N_("Enter the date of birth as YYYY-MM-DD (for example 1975-03-21).")
        )
    elif dob is not None and dob > today:
        errors["date_of_birth"] = Message(N_("The date of birth cannot be in the future."))
    elif dob is not None and dob.year < OLDEST_BIRTH_YEAR:
        errors["date_of_birth"] = Message(
            N_("The date of birth is before %(year)d; please check it."), year=OLDEST_BIRTH_YEAR
        )

    sex = values["sex"]
    if sex and sex not in Sex._value2member_map_:
        errors["sex"] = Message(N_("Choose one of: female, male, other, unknown."))

    id_type = values["id_type"]
    national_id = values["national_id"].replace(" ", "").upper() or None
    id_country = values["id_country"].upper() or None
    if id_type and id_type not in IdentifierType._value2member_map_:
        errors["id_type"] = Message(N_("Choose one of the listed identifier types."))
    elif id_type == IdentifierType.PESEL:
        id_country = "PL"
        if not national_id:
            errors["national_id"] = Message(N_("Enter the PESEL number."))
        else:
            try:
                pesel = parse_pesel(national_id)
            except PeselError as exc:
                errors["national_id"] = Message(str(exc))
            else:
                if dob is not None and pesel.birth_date != dob:
                    errors["national_id"] = Message(
                        N_(
                            "The PESEL encodes the date of birth %(pesel_dob)s, but "
                            "%(dob)s was entered. Check both."
                        ),
                        pesel_dob=pesel.birth_date.isoformat(),
                        dob=dob.isoformat(),
                    )
                elif sex in (Sex.FEMALE, Sex.MALE) and pesel.sex != sex:
                    errors["national_id"] = Message(
                        N_("The PESEL encodes the sex %(pesel_sex)s, but %(sex)s was chosen."),
                        pesel_sex=Message(SEX_LABELS[Sex(pesel.sex)]),
                        sex=Message(SEX_LABELS[Sex(sex)]),
                    )
    elif id_type in (IdentifierType.PASSPORT, IdentifierType.NATIONAL_ID_CARD):
        if not national_id or not DOCUMENT_PATTERN.match(national_id):
            errors["national_id"] = Message(
                N_("Enter the document number: 4-20 letters or digits.")
            )
        if not id_country or id_country not in COUNTRY_CODES:
            errors["id_country"] = Message(
                N_("Enter the issuing country as a two-letter code (for example DE).")
            )
    elif id_type == IdentifierType.NONE:
        national_id = id_country = None

    optional: dict[str, str | None] = {}
    checks = {
        "phone": (PHONE_PATTERN, N_("Enter a phone number of digits, spaces and an optional +.")),
        "emergency_contact_phone": (
            PHONE_PATTERN,
            N_("Enter a phone number of digits, spaces and an optional +."),
        ),
        "email": (EMAIL_PATTERN, N_("Enter an email address like name@example.com.")),
        "postal_code": (POSTAL_PATTERN, N_("Enter a postal code such as 00-950.")),
    }
    for key, (pattern, msg) in checks.items():
        v = values[key]
        if v and (len(v) > FREE_TEXT_MAX or not pattern.match(v)):
            errors[key] = Message(msg)
        optional[key] = v or None
    for key in ("address", "city", "emergency_contact_name"):
        v = values[key]
        if len(v) > FREE_TEXT_MAX:
            errors[key] = Message(
                N_("This field may have at most %(max)d characters."), max=FREE_TEXT_MAX
            )
        elif any(unicodedata.category(c) in ("Cc", "Cf") for c in v):
            # Control and invisible formatting characters: a right-to-left override shows
            # "5 gnirtS" as "String 5", a zero-width space splits a word no one can see.
            errors[key] = Message(N_("This field contains characters that are not allowed."))
        optional[key] = v or None
    country = values["country"].upper() or None
    if country and country not in COUNTRY_CODES:
        errors["country"] = Message(N_("Enter the country as a two-letter code (for example PL)."))
    language = values["preferred_language"] or "pl"
    if language not in ("pl", "en"):
        errors["preferred_language"] = Message(N_("Choose Polish or English."))

    if errors:
        raise InvalidInput(errors)
    assert dob is not None
    return PatientData(
        given_name=values["given_name"],
        family_name=values["family_name"],
        date_of_birth=dob,
        sex=Sex(sex),
        id_type=IdentifierType(id_type),
        national_id=national_id,
        id_country=id_country,
        phone=optional["phone"],
        email=optional["email"],
        preferred_language=language,
        address=optional["address"],
        postal_code=optional["postal_code"],
        city=optional["city"],
        country=country,
        emergency_contact_name=optional["emergency_contact_name"],
        emergency_contact_phone=optional["emergency_contact_phone"],
    )


AMENDMENT_REASON_MIN = 5
AMENDMENT_REASON_MAX = 500


def validate_reason(reason: str) -> str:
    reason = reason.strip()
    if not (AMENDMENT_REASON_MIN <= len(reason) <= AMENDMENT_REASON_MAX):
        raise InvalidInput(
            {
                "reason": Message(
                    N_("Give the reason for the correction (%(min)d-%(max)d characters)."),
                    min=AMENDMENT_REASON_MIN,
                    max=AMENDMENT_REASON_MAX,
                )
            }
        )
    refuse_reordering("reason", reason)
    return reason


def as_form_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
