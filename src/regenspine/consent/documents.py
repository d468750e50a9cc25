"""Versioned patient consent documents, read from data files and rendered for one patient.

Each document lives in ``regenspine/reference/consent/<code>-<version>.yaml``; this module
only parses, validates and renders it. Pure: the only I/O is reading those packaged files
(no web, no database).

A document is refused when it could understate what the patient agrees to: every text must
exist in every language, every required risk must be listed, and the declarations must name
the disc levels. ``content_hash`` fingerprints the exact wording, so a recorded consent can
prove which text the patient was shown.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from typing import Annotated, Literal, NamedTuple
from zoneinfo import ZoneInfo

from pydantic import Field, StrictBool, StringConstraints, field_validator, model_validator

from regenspine.catalog.conditions import SpinalRegion, levels_for_region
from regenspine.i18n import DEFAULT_TIMEZONE
from regenspine.reference import loading
from regenspine.reference.loading import FrozenModel, Slug

DOCUMENTS_PACKAGE = "regenspine.reference.consent"
DEFAULT_DOCUMENT_CODE = "bmac-spine"

#: Risks no consent may leave out (DESIGN.md, "Consent"): a document without one is refused.
REQUIRED_RISK_IDS: tuple[str, ...] = (
    "bleeding",
    "infection",
    "nerve_injury",
    "pain_flare",
    "allergic_reaction",
    "radiation",
    "no_benefit",
    "further_procedures",
)

#: Sections every document must have: what is done, its regulatory status, what to expect,
#: the alternatives, the introduction to the risks, data and registry, withdrawal.
REQUIRED_SECTION_IDS: tuple[str, ...] = (
    "procedure",
    "regulatory_status",
    "expected_course",
    "alternatives",
    "risks",
    "data_and_registry",
    "withdrawal",
)

#: The placeholders a text may contain; render() fills them.
PLACEHOLDERS = frozenset({"{levels}", "{region}"})

LanguageCode = Literal["en", "pl"]
SUPPORTED_LANGUAGES: tuple[str, ...] = ("en", "pl")

DocumentCode = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")]

_FILE_NAME = re.compile(r"^(?P<code>[a-z][a-z0-9]*(?:-[a-z0-9]+)*)-(?P<version>[1-9][0-9]*)\.yaml$")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


class ConsentDocumentError(ValueError):
    """A consent document cannot be read or breaks a rule; the message says where."""


class UnknownConsentDocument(LookupError):
    """There is no consent document with this code and version (or none in effect)."""

    def __init__(self, code: str, version: int | None, message: str | None = None) -> None:
        self.code = code
        self.version = version
        if message is None:
            message = f"there is no consent document {code!r} version {version}"
        super().__init__(message)


class Frequency(StrEnum):
    """How often a complication happens, in the plain words of patient leaflets."""

    COMMON = "common"
    UNCOMMON = "uncommon"
    RARE = "rare"
    UNKNOWN = "unknown"


# --- Models ----------------------------------------------------------------------------


def _normalise(text: str) -> str:
    """NFC, paragraphs separated by one blank line, whitespace inside a paragraph collapsed.

    Re-wrapping the YAML therefore changes neither the text shown nor the content hash.
    """
    text = unicodedata.normalize("NFC", text)
    paragraphs = (" ".join(p.split()) for p in _PARAGRAPH_BREAK.split(text.strip()))
    return "\n\n".join(p for p in paragraphs if p)


def _placeholder_problem(text: str) -> tuple[frozenset[str], str | None]:
    """The placeholders used in text, and what is wrong with its braces, if anything."""
    used = frozenset(_PLACEHOLDER.findall(text))
    unknown = sorted(used - PLACEHOLDERS)
    if unknown:
        allowed = ", ".join(sorted(PLACEHOLDERS))
        return used, f"uses unknown placeholder(s) {', '.join(unknown)} (allowed: {allowed})"
    if "{" in _PLACEHOLDER.sub("", text) or "}" in _PLACEHOLDER.sub("", text):
        return used, "has a brace that is not part of a placeholder"
    return used, None


class LocalizedText(FrozenModel):
    """One text in every language the clinic uses; a missing language is an error."""

    en: str
    pl: str

    @field_validator("en", "pl")
    @classmethod
    def _normalised_and_not_blank(cls, value: str) -> str:
        value = _normalise(value)
        if not value:
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _same_placeholders_in_every_language(self) -> LocalizedText:
        found: dict[str, frozenset[str]] = {}
        for language in SUPPORTED_LANGUAGES:
            used, problem = _placeholder_problem(self.get(language))
            if problem:
                raise ValueError(f"the {language} text {problem}")
            found[language] = used
        if found["en"] != found["pl"]:
            raise ValueError(
                "the en and pl texts use different placeholders "
                f"(en: {sorted(found['en']) or 'none'}, pl: {sorted(found['pl']) or 'none'})"
            )
        return self

    def get(self, language: str) -> str:
        text: str = getattr(self, language)
        return text

    def placeholders(self) -> frozenset[str]:
        return frozenset(_PLACEHOLDER.findall(self.en))


class Section(FrozenModel):
    """A titled part of the information, in paragraphs (blank-line separated)."""

    id: Slug
    title: LocalizedText
    body: LocalizedText


class Risk(FrozenModel):
    """One risk the patient is told about.

    ``serious`` means the complication *can* be serious (hospital treatment, an operation,
    lasting harm), even when that form of it is rare.
    """

    id: Slug
    title: LocalizedText
    detail: LocalizedText
    frequency: Frequency
    serious: StrictBool


class Declaration(FrozenModel):
    """A statement the patient confirms by signing."""

    id: Slug
    text: LocalizedText


class RegionNames(FrozenModel):
    """How each spinal region is named in the text (fills ``{region}``)."""

    lumbar: LocalizedText
    thoracic: LocalizedText
    cervical: LocalizedText


class FrequencyLabels(FrozenModel):
    """The word shown for each frequency, in every language."""

    common: LocalizedText
    uncommon: LocalizedText
    rare: LocalizedText
    unknown: LocalizedText


def _duplicates(ids: Sequence[str]) -> list[str]:
    return sorted({i for i in ids if ids.count(i) > 1})


class ConsentDocument(FrozenModel):
    """One version of a consent document, exactly as the patient is shown it."""

    code: DocumentCode
    version: Annotated[int, Field(strict=True, ge=1)]
    effective_from: date
    languages: tuple[LanguageCode, ...]
    title: LocalizedText
    region_names: RegionNames
    frequency_labels: FrequencyLabels
    sections: tuple[Section, ...]
    risks: tuple[Risk, ...]
    declarations: tuple[Declaration, ...]

    @model_validator(mode="after")
    def _document_rules(self) -> ConsentDocument:
        problems: list[str] = []

        if not self.languages:
            problems.append("languages must name at least one of en, pl")
        for language in _duplicates(list(self.languages)):
            problems.append(f"languages lists {language!r} twice")

        for kind, ids in (
            ("section", [s.id for s in self.sections]),
            ("risk", [r.id for r in self.risks]),
            ("declaration", [d.id for d in self.declarations]),
        ):
            for duplicate in _duplicates(ids):
                problems.append(f"{kind} id {duplicate!r} is used more than once")

        risk_ids = {r.id for r in self.risks}
        for risk_id in REQUIRED_RISK_IDS:
            if risk_id not in risk_ids:
                problems.append(
                    f"required risk {risk_id!r} is missing: a consent document must list "
                    f"every required risk ({', '.join(REQUIRED_RISK_IDS)})"
                )

        section_ids = {s.id for s in self.sections}
        for section_id in REQUIRED_SECTION_IDS:
            if section_id not in section_ids:
                problems.append(
                    f"required section {section_id!r} is missing "
                    f"(required: {', '.join(REQUIRED_SECTION_IDS)})"
                )

        if not self.declarations:
            problems.append("the document has no declarations for the patient to confirm")
        elif not any("{levels}" in d.text.placeholders() for d in self.declarations):
            problems.append(
                "no declaration names the disc levels ({levels}): the patient must consent "
                "to the procedure at named levels"
            )

        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def content_hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON of the document: keys sorted, no whitespace,
        UTF-8. Any change of wording changes it; re-wrapping the source file does not."""
        canonical = json.dumps(
            self.model_dump(mode="json"),
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def risk(self, risk_id: str) -> Risk:
        """The risk with this id; KeyError when there is none."""
        missing = f"consent document {self.code} v{self.version} has no risk {risk_id!r}"
        return loading.find_entry(self.risks, "id", risk_id, missing)

    def section(self, section_id: str) -> Section:
        """The section with this id; KeyError when there is none."""
        missing = f"consent document {self.code} v{self.version} has no section {section_id!r}"
        return loading.find_entry(self.sections, "id", section_id, missing)

    def texts(self) -> Iterator[tuple[str, LocalizedText]]:
        """Every text in the document as (path, text), e.g. ("risks[1].detail", ...)."""
        yield "title", self.title
        for name in ("lumbar", "thoracic", "cervical"):
            yield f"region_names.{name}", getattr(self.region_names, name)
        for frequency in Frequency:
            yield f"frequency_labels.{frequency}", getattr(self.frequency_labels, frequency)
        for i, s in enumerate(self.sections):
            yield f"sections[{i}].title", s.title
            yield f"sections[{i}].body", s.body
        for i, r in enumerate(self.risks):
            yield f"risks[{i}].title", r.title
            yield f"risks[{i}].detail", r.detail
        for i, d in enumerate(self.declarations):
            yield f"declarations[{i}].text", d.text

    def render(self, language: str, levels: Sequence[str], region: str) -> RenderedConsent:
        """The document in one language for one patient, with {levels} and {region} filled.

        language: "pl" or "en" (a locale such as "pl-PL" is accepted); anything else, or a
        language this document is not published in, raises ValueError. region: a spinal
        region (lumbar, thoracic, cervical). levels: the disc levels to treat, each a level
        of that region ("L4-L5"); shown top to bottom. Unknown regions, unknown or repeated
        levels and an empty list raise ValueError.
        """
        lang = _language(language, self)
        region_code = _region(region)
        ordered = _levels(levels, region_code)
        values = {
            "{levels}": ", ".join(ordered),
            "{region}": getattr(self.region_names, region_code).get(lang),
        }

        def fill(text: LocalizedText) -> str:
            result = text.get(lang)
            for placeholder in text.placeholders():
                result = result.replace(placeholder, values[placeholder])
            return result

        return RenderedConsent(
            code=self.code,
            version=self.version,
            content_hash=self.content_hash,
            language=lang,
            region=region_code,
            levels=ordered,
            title=fill(self.title),
            section_ids=tuple(s.id for s in self.sections),
            sections=tuple(
                RenderedSection(fill(s.title), tuple(fill(s.body).split("\n\n")))
                for s in self.sections
            ),
            risks=tuple(
                RenderedRisk(
                    id=r.id,
                    title=fill(r.title),
                    detail=fill(r.detail),
                    frequency=r.frequency,
                    frequency_label=getattr(self.frequency_labels, r.frequency).get(lang),
                    serious=r.serious,
                )
                for r in self.risks
            ),
            declarations=tuple(
                RenderedDeclaration(id=d.id, text=fill(d.text)) for d in self.declarations
            ),
        )


# --- Rendering -------------------------------------------------------------------------


class RenderedSection(NamedTuple):
    title: str
    paragraphs: tuple[str, ...]


@dataclass(frozen=True)
class RenderedRisk:
    id: str
    title: str
    detail: str
    frequency: Frequency
    frequency_label: str
    serious: bool


@dataclass(frozen=True)
class RenderedDeclaration:
    id: str
    text: str


@dataclass(frozen=True)
class RenderedConsent:
    """A consent document in one language for one patient's levels, ready to show.

    ``sections`` keep the document's order; ``section_ids`` runs parallel to them. The risk
    list belongs right after the section with id "risks" (its introduction).
    ``code``, ``version`` and ``content_hash`` are what a signed consent records.
    """

    code: str
    version: int
    content_hash: str
    language: str
    region: str
    levels: tuple[str, ...]
    title: str
    section_ids: tuple[str, ...]
    sections: tuple[RenderedSection, ...]
    risks: tuple[RenderedRisk, ...]
    declarations: tuple[RenderedDeclaration, ...]

    def section(self, section_id: str) -> RenderedSection:
        """The rendered section with this id; KeyError when there is none."""
        try:
            return self.sections[self.section_ids.index(section_id)]
        except ValueError:
            raise KeyError(f"no section {section_id!r} in {self.code} v{self.version}") from None


def _language(language: str, document: ConsentDocument) -> str:
    primary = language.replace("_", "-").split("-", 1)[0].lower()
    if primary not in document.languages:
        raise ValueError(
            f"consent document {document.code} v{document.version} is not available in "
            f"{language!r}; use one of {', '.join(document.languages)}"
        )
    return primary


def _region(region: str) -> str:
    try:
        return SpinalRegion(region).value
    except ValueError:
        allowed = ", ".join(r.value for r in SpinalRegion)
        raise ValueError(f"unknown spinal region {region!r}; use one of {allowed}") from None


def _levels(levels: Sequence[str], region: str) -> tuple[str, ...]:
    if isinstance(levels, str):
        raise ValueError(f"levels must be a list of disc levels, not the string {levels!r}")
    valid = levels_for_region(region)
    wanted = [level.strip().upper() for level in levels]
    if not wanted:
        raise ValueError("a consent must name at least one disc level")
    for level in wanted:
        if level not in valid:
            raise ValueError(
                f"{level!r} is not a disc level of the {region} spine (levels: {', '.join(valid)})"
            )
    if repeated := _duplicates(wanted):
        raise ValueError(f"disc level(s) named more than once: {', '.join(repeated)}")
    return tuple(sorted(wanted, key=valid.index))


# --- Loading ---------------------------------------------------------------------------


def parse_document(text: str, source: str = "<text>") -> ConsentDocument:
    """Parse and validate one consent document from YAML text.

    Raises ConsentDocumentError naming the source, and the entry and field of every problem.
    """
    name = f"consent document {source}"
    entries = {"sections": "section", "risks": "risk", "declarations": "declaration"}
    spec = loading.ReferenceFile(
        ConsentDocument, ConsentDocumentError, name, entries, whole="document", subject=name
    )
    return spec.load(text)


def available_documents() -> list[tuple[str, int]]:
    """Every packaged consent document as (code, version), sorted."""
    found = []
    for entry in resources.files(DOCUMENTS_PACKAGE).iterdir():
        match = _FILE_NAME.fullmatch(entry.name)
        if match and entry.is_file():
            found.append((match["code"], int(match["version"])))
    return sorted(found)


@lru_cache(maxsize=32)
def load_document(code: str, version: int) -> ConsentDocument:
    """The packaged consent document with this code and version, validated.

    Raises UnknownConsentDocument when there is none, ConsentDocumentError when it is
    invalid or its content does not match its file name.
    """
    if (code, version) not in available_documents():
        raise UnknownConsentDocument(code, version)
    name = f"{code}-{version}.yaml"
    text = loading.read_packaged(
        DOCUMENTS_PACKAGE, name, ConsentDocumentError, f"consent document {name}"
    )
    document = parse_document(text, source=name)
    if (document.code, document.version) != (code, version):
        raise ConsentDocumentError(
            f"consent document {name} says it is {document.code!r} version "
            f"{document.version}; the file name and its content must agree"
        )
    return document


def clinic_today() -> date:
    """Today's date at the clinic (its time zone, not the server's)."""
    return datetime.now(ZoneInfo(DEFAULT_TIMEZONE)).date()


def current_document(
    code: str = DEFAULT_DOCUMENT_CODE, *, today: date | None = None
) -> ConsentDocument:
    """The highest version of this document in effect today (effective_from <= today).

    Raises UnknownConsentDocument when no version exists or none is in effect yet.
    """
    on = clinic_today() if today is None else today
    versions = sorted((v for c, v in available_documents() if c == code), reverse=True)
    if not versions:
        raise UnknownConsentDocument(code, None, f"there is no consent document {code!r}")
    for version in versions:
        document = load_document(code, version)
        if document.effective_from <= on:
            return document
    raise UnknownConsentDocument(
        code,
        None,
        f"no version of consent document {code!r} is in effect on {on.isoformat()} "
        f"(versions: {', '.join(str(v) for v in sorted(versions))})",
    )
