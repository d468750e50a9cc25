"""The red-flag screening a doctor completes before anyone considers a cell injection.

The questions live in ``regenspine/reference/red_flags.yaml``; this module parses and
validates them, picks the questions for a spinal region and scores a set of yes/no answers.
Pure: the only I/O is reading that packaged file (no web, no database).

Any "yes" means possible serious pathology (cauda equina syndrome, cancer, infection,
fracture, myelopathy...): urgent referral elsewhere, never this therapy. So a screening
is only accepted when every question for the region has an explicit yes or no.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from regenspine.catalog.conditions import SpinalRegion
from regenspine.errors import N_, Message

RED_FLAGS_PACKAGE = "regenspine.reference"
RED_FLAGS_RESOURCE = "red_flags.yaml"

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Version = Annotated[str, StringConstraints(pattern=r"^[0-9]{4}\.[0-9]{1,2}\.[0-9]+$")]


class RedFlagError(ValueError):
    """The red-flag list cannot be read or breaks a rule; the message says where."""


class IncompleteScreening(ValueError):
    """Some questions for the region were not answered, or answers name unknown questions.

    ``missing`` and ``unknown`` list the item ids; ``message`` is the translatable text.
    """

    def __init__(self, missing: list[str], unknown: list[str]) -> None:
        self.missing = missing
        self.unknown = unknown
        if missing:
            self.message = Message(
                N_("Answer every red-flag question: %(count)d not answered."),
                count=len(missing),
            )
        else:
            self.message = Message(
                N_("Some answers are for questions that are not on this form: %(questions)s."),
                questions=", ".join(unknown),
            )
        super().__init__(self.message.render())


class RedFlagCategory(StrEnum):
    CAUDA_EQUINA = "cauda_equina"
    CANCER = "cancer"
    INFECTION = "infection"
    FRACTURE = "fracture"
    INFLAMMATORY = "inflammatory"
    NEUROLOGICAL_DEFICIT = "neurological_deficit"
    MYELOPATHY = "myelopathy"


#: Where a category may be asked at all: cauda equina lies below the cord (lumbar), a
#: myelopathy needs a cord (cervical, thoracic).
CATEGORY_REGIONS: dict[RedFlagCategory, frozenset[SpinalRegion]] = {
    RedFlagCategory.CAUDA_EQUINA: frozenset({SpinalRegion.LUMBAR}),
    RedFlagCategory.MYELOPATHY: frozenset({SpinalRegion.CERVICAL, SpinalRegion.THORACIC}),
}


# --- Models ----------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedFlagSource(_Frozen):
    id: Slug
    title: Text
    citation: Text
    note: Text | None = None


class Question(_Frozen):
    en: Text
    pl: Text


class RedFlagItem(_Frozen):
    """One yes/no question; "yes" is a red flag."""

    id: Slug
    category: RedFlagCategory
    question: Question
    regions: tuple[SpinalRegion, ...]
    source: Slug
    note: Text | None = None

    @field_validator("regions")
    @classmethod
    def _regions_non_empty_and_distinct(
        cls, regions: tuple[SpinalRegion, ...]
    ) -> tuple[SpinalRegion, ...]:
        if not regions:
            raise ValueError("regions must name at least one of lumbar, cervical, thoracic")
        if len(set(regions)) != len(regions):
            raise ValueError("regions lists a region twice")
        return regions

    @model_validator(mode="after")
    def _regions_fit_the_category(self) -> RedFlagItem:
        allowed = CATEGORY_REGIONS.get(self.category)
        if allowed is not None and not set(self.regions) <= allowed:
            outside = sorted(set(self.regions) - allowed)
            raise ValueError(
                f"a {self.category} question cannot be asked for {', '.join(outside)} "
                f"(only {', '.join(sorted(allowed))})"
            )
        return self

    def applies_to(self, region: SpinalRegion | str) -> bool:
        return SpinalRegion(region) in self.regions

    def text(self, language: str) -> str:
        """The question in 'pl' or 'en' (a locale such as 'pl_PL' or 'en-GB' is accepted)."""
        primary = language.replace("_", "-").split("-", 1)[0].lower()
        if primary == "pl":
            return self.question.pl
        if primary == "en":
            return self.question.en
        raise ValueError(f"red flag {self.id!r} has no text in {language!r}; use 'pl' or 'en'")


class RedFlagList(_Frozen):
    version: Version
    published: date
    sources: tuple[RedFlagSource, ...]
    items: tuple[RedFlagItem, ...]

    @model_validator(mode="after")
    def _list_rules(self) -> RedFlagList:
        problems: list[str] = []
        if not self.sources or not self.items:
            problems.append("a red-flag list needs at least one source and one item")
        source_ids = [s.id for s in self.sources]
        for sid in sorted({s for s in source_ids if source_ids.count(s) > 1}):
            problems.append(f"source id {sid!r} is declared more than once")

        first_entry: dict[str, int] = {}
        for number, item in enumerate(self.items, start=1):
            if item.id in first_entry:
                problems.append(
                    f"item #{number}: id {item.id!r} duplicates item #{first_entry[item.id]}"
                )
            else:
                first_entry[item.id] = number
            if item.source not in source_ids:
                problems.append(
                    f"item #{number} ({item.id!r}), field source: {item.source!r} is not a "
                    f"declared source (declared: {', '.join(source_ids)})"
                )

        for region in SpinalRegion:
            if not any(region in item.regions for item in self.items):
                problems.append(f"no question is asked for the {region} region")

        if problems:
            raise ValueError("; ".join(problems))
        return self

    def for_region(self, region: SpinalRegion | str) -> list[RedFlagItem]:
        """The questions asked for a region, in file order."""
        region = SpinalRegion(region)
        return [item for item in self.items if region in item.regions]

    def get(self, item_id: str) -> RedFlagItem:
        """The item with this id; KeyError when there is none."""
        for item in self.items:
            if item.id == item_id:
                return item
        raise KeyError(f"no red-flag item {item_id!r} in list {self.version}")

    def source(self, source_id: str) -> RedFlagSource:
        """The declared source with this id; KeyError when there is none."""
        for source in self.sources:
            if source.id == source_id:
                return source
        raise KeyError(f"no source with id {source_id!r} in red-flag list {self.version}")


# --- Screening -------------------------------------------------------------------------


@dataclass(frozen=True)
class ScreeningResult:
    """What the screening found, with the answers exactly as scored and the list version."""

    positive: tuple[RedFlagItem, ...]
    any_positive: bool
    version: str
    answers: dict[str, bool] = field(default_factory=dict)


def items_for_region(
    region: SpinalRegion | str, red_flags: RedFlagList | None = None
) -> list[RedFlagItem]:
    """The questions to ask for a region (the packaged list unless one is given)."""
    return (red_flags or get_red_flags()).for_region(region)


def screen(
    answers: Mapping[str, bool],
    region: SpinalRegion | str,
    red_flags: RedFlagList | None = None,
) -> ScreeningResult:
    """Scores a completed screening: every question for the region answered True or False.

    A question left out, or answered with anything but True/False (None, "yes", 1), counts as
    not answered; an answer to a question not asked for this region counts as unknown. Either
    raises IncompleteScreening rather than letting a gap pass as "no".
    """
    red_flags = red_flags or get_red_flags()
    asked = red_flags.for_region(region)
    asked_ids = {item.id for item in asked}
    # Only a real bool is an answer: None, 1 or "no" must never pass as "no".
    missing = [item.id for item in asked if not isinstance(answers.get(item.id), bool)]
    unknown = sorted(key for key in answers if key not in asked_ids)
    if missing or unknown:
        raise IncompleteScreening(missing, unknown)
    positive = tuple(item for item in asked if answers[item.id] is True)
    return ScreeningResult(
        positive=positive,
        any_positive=bool(positive),
        version=red_flags.version,
        answers={item.id: answers[item.id] for item in asked},
    )


# --- Loading ---------------------------------------------------------------------------


def _path(parts: tuple[int | str, ...]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(loc: tuple[int | str, ...], data: dict[str, Any]) -> str:
    """Turn a pydantic error location into "item #4 ('night_pain'), field regions[0]"."""
    if len(loc) >= 2 and loc[0] in ("items", "sources") and isinstance(loc[1], int):
        head = f"{'item' if loc[0] == 'items' else 'source'} #{loc[1] + 1}"
        entries = data.get(str(loc[0]))
        if isinstance(entries, list) and loc[1] < len(entries):
            entry = entries[loc[1]]
            if isinstance(entry, dict) and entry.get("id") is not None:
                head += f" ({entry['id']!r})"
        rest = _path(loc[2:])
        return f"{head}, field {rest}" if rest else head
    return f"field {_path(loc)}"


def _line(loc: tuple[int | str, ...], msg: str, data: dict[str, Any]) -> str:
    msg = msg.removeprefix("Value error, ")
    return f"{_describe(loc, data)}: {msg}" if loc else msg


def _packaged_text() -> str:
    try:
        resource = resources.files(RED_FLAGS_PACKAGE).joinpath(RED_FLAGS_RESOURCE)
        return resource.read_text(encoding="utf-8")
    except (OSError, ModuleNotFoundError) as exc:
        raise RedFlagError(
            f"cannot read the packaged red-flag list {RED_FLAGS_PACKAGE}/{RED_FLAGS_RESOURCE}: "
            f"{exc}"
        ) from exc


def load_red_flags(text: str | None = None) -> RedFlagList:
    """Parse and validate a red-flag list (the packaged one when text is None).

    Raises RedFlagError naming the item and field of every problem found.
    """
    if text is None:
        text = _packaged_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RedFlagError(f"the red-flag list is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RedFlagError(
            "the red-flag list must be a YAML mapping with version, published, sources and items"
        )
    try:
        return RedFlagList.model_validate(data)
    except ValidationError as exc:
        lines = [_line(error["loc"], error["msg"], data) for error in exc.errors(include_url=False)]
        raise RedFlagError("invalid red-flag list:\n  " + "\n  ".join(lines)) from exc


@lru_cache(maxsize=1)
def get_red_flags() -> RedFlagList:
    """The packaged red-flag list, loaded and validated once."""
    return load_red_flags()
