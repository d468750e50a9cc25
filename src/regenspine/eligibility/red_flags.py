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

from pydantic import model_validator

from regenspine.catalog.conditions import Regions, SpinalRegion
from regenspine.errors import N_, Message
from regenspine.reference import loading
from regenspine.reference.loading import FrozenModel, Slug, Text, Version

RED_FLAGS_PACKAGE = "regenspine.reference"
RED_FLAGS_RESOURCE = "red_flags.yaml"


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


class RedFlagSource(FrozenModel):
    id: Slug
    title: Text
    citation: Text
    note: Text | None = None


class Question(FrozenModel):
    en: Text
    pl: Text


class RedFlagItem(FrozenModel):
    """One yes/no question; "yes" is a red flag."""

    id: Slug
    category: RedFlagCategory
    question: Question
    regions: Regions
    source: Slug
    note: Text | None = None

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
        missing = f"red flag {self.id!r} has no text in {language!r}; use 'pl' or 'en'"
        return loading.in_language(self.question, language, missing)


class RedFlagList(FrozenModel):
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
        missing = f"no red-flag item {item_id!r} in list {self.version}"
        return loading.find_entry(self.items, "id", item_id, missing)

    def source(self, source_id: str) -> RedFlagSource:
        """The declared source with this id; KeyError when there is none."""
        missing = f"no source with id {source_id!r} in red-flag list {self.version}"
        return loading.find_entry(self.sources, "id", source_id, missing)


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


# The history on the consultation form asks two red-flag questions again. The answers must
# agree: "history of cancer" ticked beside "no" to the red-flag question let an episode pass as
# eligible with a cancer history the screening would have sent to urgent referral.
@dataclass(frozen=True)
class SameQuestion:
    history_field: str
    red_flag_id: str
    topic: str
    # False where only "yes" in the history forces "yes" on the red flag (an active
    # malignancy is a history of cancer; a history of cancer need not be active).
    both_ways: bool = True


SAME_QUESTIONS = (
    SameQuestion("history_cancer", "history_of_cancer", N_("a history of cancer")),
    SameQuestion("active_malignancy", "history_of_cancer", N_("cancer"), both_ways=False),
    SameQuestion("immunosuppression", "immunosuppression", N_("immunosuppression")),
)


def disagreements(history: Mapping[str, object], answers: Mapping[str, object]) -> list[str]:
    """The topics on which the consultation's history and the red-flag answers disagree (only
    questions answered on both sides count)."""
    topics: list[str] = []
    for q in SAME_QUESTIONS:
        said, answered = history.get(q.history_field), answers.get(q.red_flag_id)
        if not isinstance(said, bool) or not isinstance(answered, bool) or said == answered:
            continue
        if (q.both_ways or said) and q.topic not in topics:
            topics.append(q.topic)
    return topics


# --- Loading ---------------------------------------------------------------------------


_RED_FLAG_FILE = loading.ReferenceFile(
    RedFlagList,
    RedFlagError,
    "red-flag list",
    entries={"items": "item", "sources": "source"},
    top_level="version, published, sources and items",
    package=RED_FLAGS_PACKAGE,
    resource=RED_FLAGS_RESOURCE,
)


def load_red_flags(text: str | None = None) -> RedFlagList:
    """Parse and validate a red-flag list (the packaged one when text is None).

    Raises RedFlagError naming the item and field of every problem found.
    """
    return _RED_FLAG_FILE.load(text)


@lru_cache(maxsize=1)
def get_red_flags() -> RedFlagList:
    """The packaged red-flag list, loaded and validated once."""
    return load_red_flags()
