"""The catalogue of spinal conditions the clinic treats, read from a versioned data file.

The data lives in ``regenspine/reference/conditions.yaml``; this module only parses and
validates it. Pure: the only I/O is reading that packaged file (no web, no database).

Each condition carries its WHO ICD-10 and ICD-10-CM codes, its SNOMED CT concept where one is
known, and for every code the source it comes from and how sure we are of it
(confirmed / memory / unconfirmed).
"""

from __future__ import annotations

import re
from datetime import date
from enum import StrEnum
from functools import lru_cache
from itertools import pairwise
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StrictBool, field_validator, model_validator

from regenspine.reference import loading
from regenspine.reference.loading import FrozenModel, Slug, Text, Version

EXPECTED_CONDITION_COUNT = 14
CATALOGUE_PACKAGE = "regenspine.reference"
CATALOGUE_RESOURCE = "conditions.yaml"

#: Any ICD-10 code, including ICD-10-CM's letters after the dot (M51.A3). No "x" placeholders.
ICD10_CODE = re.compile(r"[A-Z][0-9]{2}(\.[0-9A-Z]{1,4})?")
#: WHO ICD-10 proper: digits only after the dot, 4th and optional 5th (site) character.
WHO_ICD10_CODE = re.compile(r"[A-Z][0-9]{2}(\.[0-9]{1,2})?")
#: SNOMED CT identifier: 6 to 18 digits, no leading zero.
SCTID = re.compile(r"[1-9][0-9]{5,17}")
#: Partition identifiers of concept ids: 00 (International Edition), 10 (extension).
CONCEPT_PARTITIONS = frozenset({"00", "10"})


class CatalogueError(ValueError):
    """The condition catalogue cannot be read or breaks a rule; the message says where."""


class SpinalRegion(StrEnum):
    LUMBAR = "lumbar"
    CERVICAL = "cervical"
    THORACIC = "thoracic"


class CodeSite(StrEnum):
    """The spinal site a code is specific to, as ICD-10's 5th-character site digit names it."""

    OCCIPITO_ATLANTO_AXIAL = "occipito_atlanto_axial"
    CERVICAL = "cervical"
    CERVICOTHORACIC = "cervicothoracic"
    THORACIC = "thoracic"
    THORACOLUMBAR = "thoracolumbar"
    LUMBAR = "lumbar"
    LUMBOSACRAL = "lumbosacral"
    SACRAL = "sacral"


def _regions_non_empty_and_distinct(regions: tuple[SpinalRegion, ...]) -> tuple[SpinalRegion, ...]:
    if not regions:
        raise ValueError("regions must name at least one of lumbar, cervical, thoracic")
    if len(set(regions)) != len(regions):
        raise ValueError("regions lists a region twice")
    return regions


#: One or more spinal regions, each named once.
Regions = Annotated[tuple[SpinalRegion, ...], AfterValidator(_regions_non_empty_and_distinct)]


#: Which of the clinic's regions each coded site belongs to.
SITE_REGIONS: dict[CodeSite, frozenset[SpinalRegion]] = {
    CodeSite.OCCIPITO_ATLANTO_AXIAL: frozenset({SpinalRegion.CERVICAL}),
    CodeSite.CERVICAL: frozenset({SpinalRegion.CERVICAL}),
    CodeSite.CERVICOTHORACIC: frozenset({SpinalRegion.CERVICAL, SpinalRegion.THORACIC}),
    CodeSite.THORACIC: frozenset({SpinalRegion.THORACIC}),
    CodeSite.THORACOLUMBAR: frozenset({SpinalRegion.THORACIC, SpinalRegion.LUMBAR}),
    CodeSite.LUMBAR: frozenset({SpinalRegion.LUMBAR}),
    CodeSite.LUMBOSACRAL: frozenset({SpinalRegion.LUMBAR}),
    CodeSite.SACRAL: frozenset({SpinalRegion.LUMBAR}),
}


class CodingStatus(StrEnum):
    CONFIRMED = "confirmed"  # a source was found and is named
    MEMORY = "memory"  # widely stated, no source found: check before coding
    UNCONFIRMED = "unconfirmed"  # unsure or derived by rule: check a primary source


# --- Verhoeff check digit (SNOMED CT identifiers end in one) -----------------------------

_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)
_VERHOEFF_INV = (0, 4, 3, 2, 1, 5, 6, 7, 8, 9)


def _verhoeff_state(digits: str, offset: int) -> int:
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _VERHOEFF_D[c][_VERHOEFF_P[(i + offset) % 8][int(ch)]]
    return c


def verhoeff_check_digit(digits: str) -> str:
    """The Verhoeff check digit to append to digits (e.g. "236" -> "3")."""
    if not digits.isascii() or not digits.isdigit():
        raise ValueError(f"Verhoeff needs a non-empty string of digits, got {digits!r}")
    return str(_VERHOEFF_INV[_verhoeff_state(digits, 1)])


def verhoeff_is_valid(number: str) -> bool:
    """Whether the last digit of number is its correct Verhoeff check digit."""
    if len(number) < 2 or not number.isascii() or not number.isdigit():
        return False
    return _verhoeff_state(number, 0) == 0


def _sctid_problem(code: str) -> str | None:
    if not SCTID.fullmatch(code):
        return "is not a SNOMED CT id (6 to 18 digits, no leading zero)"
    if not verhoeff_is_valid(code):
        return "fails the Verhoeff check digit"
    if code[-3:-1] not in CONCEPT_PARTITIONS:
        return f"has partition {code[-3:-1]!r}, which is not a concept id (00 or 10)"
    return None


# --- Spinal levels ---------------------------------------------------------------------


def levels_for_region(region: SpinalRegion | str) -> list[str]:
    """The intervertebral disc levels of a region, top to bottom.

    cervical C2-C3 ... C7-T1, thoracic T1-T2 ... T12-L1, lumbar L1-L2 ... L5-S1.
    """
    region = SpinalRegion(region)
    if region is SpinalRegion.CERVICAL:
        vertebrae = [f"C{n}" for n in range(2, 8)] + ["T1"]
    elif region is SpinalRegion.THORACIC:
        vertebrae = [f"T{n}" for n in range(1, 13)] + ["L1"]
    else:
        vertebrae = [f"L{n}" for n in range(1, 6)] + ["S1"]
    return [f"{upper}-{lower}" for upper, lower in pairwise(vertebrae)]


# --- Models ----------------------------------------------------------------------------


class Source(FrozenModel):
    id: Slug
    title: Text
    url: Text | None = None
    kind: Literal["official", "secondary"]
    note: Text | None = None


class LocalizedName(FrozenModel):
    en: Text
    pl: Text


class Coding(FrozenModel):
    """One code in one code system, with where it comes from and how sure it is."""

    code: str
    display: Text
    region: CodeSite | None = None
    source: Slug
    status: CodingStatus
    note: Text | None = None


def _check_icd_codes(
    field: str, codings: tuple[Coding, ...], pattern: re.Pattern[str], what: str
) -> tuple[Coding, ...]:
    seen: set[str] = set()
    for i, coding in enumerate(codings):
        if not pattern.fullmatch(coding.code):
            raise ValueError(
                f"{field}[{i}].code {coding.code!r} is not a valid {what} code "
                f"(pattern {pattern.pattern}; write codes in full, no 'x' placeholders)"
            )
        if coding.code in seen:
            raise ValueError(f"{field}[{i}].code {coding.code!r} is listed twice")
        seen.add(coding.code)
    return codings


class Condition(FrozenModel):
    code: Slug
    name: LocalizedName
    regions: Regions
    level_applies: StrictBool
    side_applies: StrictBool
    icd10: tuple[Coding, ...] = Field(min_length=1)
    icd10_cm: tuple[Coding, ...] = Field(min_length=1)
    snomed_ct: Coding | None
    coding_note: Text

    @field_validator("icd10")
    @classmethod
    def _who_icd10_codes(cls, codings: tuple[Coding, ...]) -> tuple[Coding, ...]:
        return _check_icd_codes("icd10", codings, WHO_ICD10_CODE, "WHO ICD-10")

    @field_validator("icd10_cm")
    @classmethod
    def _icd10_cm_codes(cls, codings: tuple[Coding, ...]) -> tuple[Coding, ...]:
        return _check_icd_codes("icd10_cm", codings, ICD10_CODE, "ICD-10-CM")

    @field_validator("snomed_ct")
    @classmethod
    def _snomed_id(cls, coding: Coding | None) -> Coding | None:
        if coding is not None and (problem := _sctid_problem(coding.code)):
            raise ValueError(f"snomed_ct.code {coding.code!r} {problem}")
        return coding

    @model_validator(mode="after")
    def _coded_sites_lie_in_the_regions(self) -> Condition:
        for field in ("icd10", "icd10_cm"):
            for i, coding in enumerate(getattr(self, field)):
                if coding.region is not None and not SITE_REGIONS[coding.region] & set(
                    self.regions
                ):
                    raise ValueError(
                        f"{field}[{i}] {coding.code} is for the {coding.region} site, outside "
                        f"this condition's regions ({', '.join(self.regions)})"
                    )
        return self

    def codings(self) -> list[tuple[str, Coding]]:
        """Every coding as (field path, coding), e.g. ("icd10_cm[2]", ...)."""
        found = [(f"icd10[{i}]", c) for i, c in enumerate(self.icd10)]
        found += [(f"icd10_cm[{i}]", c) for i, c in enumerate(self.icd10_cm)]
        if self.snomed_ct is not None:
            found.append(("snomed_ct", self.snomed_ct))
        return found

    def label(self, language: str) -> str:
        """The name in 'pl' or 'en' (a locale such as 'pl_PL' or 'en-GB' is accepted)."""
        missing = f"condition {self.code!r} has no name in {language!r}; use 'pl' or 'en'"
        return loading.in_language(self.name, language, missing)


class ConditionCatalogue(FrozenModel):
    version: Version
    published: date
    sources: tuple[Source, ...] = Field(min_length=1)
    conditions: tuple[Condition, ...]

    @model_validator(mode="after")
    def _catalogue_rules(self) -> ConditionCatalogue:
        problems: list[str] = []

        source_ids = [s.id for s in self.sources]
        for sid in sorted({s for s in source_ids if source_ids.count(s) > 1}):
            problems.append(f"source id {sid!r} is declared more than once")

        if len(self.conditions) != EXPECTED_CONDITION_COUNT:
            problems.append(
                f"the catalogue must list exactly {EXPECTED_CONDITION_COUNT} conditions, "
                f"found {len(self.conditions)}"
            )

        first_entry: dict[str, int] = {}
        for number, condition in enumerate(self.conditions, start=1):
            if condition.code in first_entry:
                problems.append(
                    f"condition #{number}: code {condition.code!r} duplicates "
                    f"condition #{first_entry[condition.code]}"
                )
            else:
                first_entry[condition.code] = number

        declared = set(source_ids)
        for number, condition in enumerate(self.conditions, start=1):
            for path, coding in condition.codings():
                if coding.source not in declared:
                    problems.append(
                        f"condition #{number} ({condition.code!r}), field {path}.source: "
                        f"{coding.source!r} is not a declared source "
                        f"(declared: {', '.join(source_ids)})"
                    )

        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(c.code for c in self.conditions)

    def get(self, code: str) -> Condition:
        """The condition with this code; KeyError when there is none."""
        missing = f"no condition with code {code!r} in catalogue {self.version}"
        return loading.find_entry(self.conditions, "code", code, missing)

    def source(self, source_id: str) -> Source:
        """The declared source with this id; KeyError when there is none."""
        missing = f"no source with id {source_id!r} in catalogue {self.version}"
        return loading.find_entry(self.sources, "id", source_id, missing)


# --- Loading ---------------------------------------------------------------------------


_CATALOGUE_FILE = loading.ReferenceFile(
    ConditionCatalogue,
    CatalogueError,
    "condition catalogue",
    entries={"conditions": "condition", "sources": "source"},
    entry_keys={"conditions": "code"},
    whole="catalogue",
    top_level="version, published, sources and conditions",
    package=CATALOGUE_PACKAGE,
    resource=CATALOGUE_RESOURCE,
    packaged="catalogue",
)


def load_catalogue(text: str | None = None) -> ConditionCatalogue:
    """Parse and validate a catalogue (the packaged one when text is None).

    Raises CatalogueError naming the entry and field of every problem found.
    """
    return _CATALOGUE_FILE.load(text)


@lru_cache(maxsize=1)
def get_catalogue() -> ConditionCatalogue:
    """The packaged catalogue, loaded and validated once."""
    return load_catalogue()
