"""The eligibility rules: whether a patient may have an intradiscal bone-marrow cell injection.

The rules live in ``regenspine/reference/eligibility_rules.yaml``; this module parses and
validates them and evaluates them against what the consultation and the red-flag screening
found. Pure: the only I/O is reading that packaged file (no web, no database).

The answer is eligible, not eligible or needs the doctor's review, always with every rule
that fired, in file order, and the rule-set version, so a stored decision can be explained
years later. A missing input never passes silently: each input that can be missing must have
an ``is_missing`` rule that asks for review (the loader refuses a rule set without one).
"""

from __future__ import annotations

import math
import operator
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StringConstraints, model_validator

from regenspine.eligibility.inputs import INPUT_FIELDS as INPUT_FIELDS
from regenspine.eligibility.inputs import EligibilityInputs as EligibilityInputs
from regenspine.eligibility.inputs import FieldKind as FieldKind
from regenspine.eligibility.inputs import InputField as InputField
from regenspine.reference import loading
from regenspine.reference.loading import FrozenModel, Slug, Text, Version

RULES_PACKAGE = "regenspine.reference"
RULES_RESOURCE = "eligibility_rules.yaml"

RuleId = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2,}-[0-9]{3,}$")]
Number = StrictInt | StrictFloat

#: The placeholder a rule text uses for the levels a level-scoped rule found.
LEVELS_PLACEHOLDER = "levels"


class RuleSetError(ValueError):
    """The rule set cannot be read or breaks a rule; the message names the rule and field."""


class UnknownRuleSetVersion(ValueError):
    """No rule set with the requested version is available."""

    def __init__(self, version: str, available: tuple[str, ...]) -> None:
        self.version = version
        self.available = available
        super().__init__(
            f"there is no eligibility rule set with version {version!r} "
            f"(available: {', '.join(available)})"
        )


class Decision(StrEnum):
    ELIGIBLE = "eligible"
    NOT_ELIGIBLE = "not_eligible"
    NEEDS_REVIEW = "needs_review"


class RuleOutcome(StrEnum):
    EXCLUDE = "exclude"
    NEEDS_REVIEW = "needs_review"
    SUPPORTS = "supports"


class Op(StrEnum):
    IS_TRUE = "is_true"
    IS_FALSE = "is_false"
    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LTE = "lte"
    GT = "gt"
    GTE = "gte"
    INTERSECTS = "intersects"
    IS_MISSING = "is_missing"


UNARY_OPS = frozenset({Op.IS_TRUE, Op.IS_FALSE, Op.IS_MISSING})
COMPARISONS: dict[Op, Callable[[Any, Any], bool]] = {
    Op.EQ: operator.eq,
    Op.NE: operator.ne,
    Op.LT: operator.lt,
    Op.LTE: operator.le,
    Op.GT: operator.gt,
    Op.GTE: operator.ge,
}
ORDERING_OPS = frozenset({Op.LT, Op.LTE, Op.GT, Op.GTE})


# --- Rule-set models -------------------------------------------------------------------


class RuleSource(FrozenModel):
    id: Slug
    title: Text
    citation: Text
    note: Text | None = None


class RuleText(FrozenModel):
    en: Text
    pl: Text


class Clause(FrozenModel):
    """One condition on one input; a rule's clauses must all hold for it to fire."""

    field: str
    op: Op
    value: StrictBool | StrictInt | StrictFloat | None = None
    param: Slug | None = None
    other: str | None = None

    @model_validator(mode="after")
    def _fits_the_input(self) -> Clause:
        spec = INPUT_FIELDS.get(self.field)
        if spec is None:
            raise ValueError(
                f"unknown input field {self.field!r} (known: {', '.join(INPUT_FIELDS)})"
            )
        given = [k for k in ("value", "param", "other") if getattr(self, k) is not None]
        if self.op in UNARY_OPS or self.op is Op.INTERSECTS:
            expected = ["other"] if self.op is Op.INTERSECTS else []
            if given != expected:
                raise ValueError(
                    f"op {self.op} takes {'only other' if expected else 'no value, param or other'}"
                    f", got {', '.join(given) or 'nothing'}"
                )
        elif len(given) != 1 or given[0] == "other":
            raise ValueError(f"op {self.op} takes exactly one of value or param")

        if self.op in (Op.IS_TRUE, Op.IS_FALSE) and spec.kind is not FieldKind.FLAG:
            raise ValueError(f"op {self.op} needs a yes/no input; {self.field} is a {spec.kind}")
        if self.op is Op.IS_MISSING and not (spec.optional or spec.kind is FieldKind.LEVELS):
            raise ValueError(f"{self.field} is always recorded, so it cannot be missing")
        if self.op is Op.INTERSECTS:
            other = INPUT_FIELDS.get(self.other or "")
            if other is None or {spec.kind, other.kind} != {FieldKind.LEVELS}:
                raise ValueError(
                    f"op intersects compares two level lists; {self.field!r} and "
                    f"{self.other!r} are not both level lists"
                )
            if other.name == self.field:
                raise ValueError("op intersects needs two different level lists")
        if self.op in COMPARISONS:
            self._check_comparison(spec)
        return self

    def _check_comparison(self, spec: InputField) -> None:
        if spec.kind is FieldKind.LEVELS:
            raise ValueError(f"op {self.op} cannot compare the level list {self.field}")
        if self.op in ORDERING_OPS and spec.kind is not FieldKind.NUMBER:
            raise ValueError(f"op {self.op} needs a number input; {self.field} is a {spec.kind}")
        if spec.kind is FieldKind.FLAG:
            if self.param is not None or not isinstance(self.value, bool):
                raise ValueError(f"{self.field} is yes/no: compare it with value true or false")
        elif isinstance(self.value, bool):
            raise ValueError(
                f"{self.field} is a number: compare it with a number, not {self.value}"
            )


def placeholders(template: str) -> list[str]:
    """The {names} a rule text uses; ValueError for anything but plain {name}."""
    names = []
    for _literal, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"write placeholders as plain {{name}}, not {{{name}...}}")
        names.append(name)
    return names


class Rule(FrozenModel):
    id: RuleId
    text: RuleText
    outcome: RuleOutcome
    when: tuple[Clause, ...]
    source: Slug
    scope: Literal["level"] | None = None
    note: Text | None = None

    @model_validator(mode="after")
    def _scope_and_text(self) -> Rule:
        if not self.when:
            raise ValueError("when must list at least one clause")
        if self.scope == "level":
            if self.outcome is not RuleOutcome.EXCLUDE:
                raise ValueError("scope level is for exclude rules (it excludes only levels)")
            if self.level_clause is None:
                raise ValueError(
                    "scope level needs exactly one clause "
                    "{field: target_levels, op: intersects, other: ...} naming the levels"
                )
        try:
            en, pl = placeholders(self.text.en), placeholders(self.text.pl)
        except ValueError as exc:
            raise ValueError(f"text: {exc}") from None
        if set(en) != set(pl):
            raise ValueError(
                f"text.en uses {sorted(set(en))} but text.pl uses {sorted(set(pl))}: "
                "both languages must fill the same placeholders"
            )
        if LEVELS_PLACEHOLDER in en and self.scope != "level":
            raise ValueError("only a rule with scope level can use {levels} in its text")
        return self

    @property
    def level_clause(self) -> Clause | None:
        """The clause that names the levels a level-scoped rule excludes."""
        found = [c for c in self.when if c.op is Op.INTERSECTS and c.field == "target_levels"]
        return found[0] if len(found) == 1 else None


class RuleSet(FrozenModel):
    version: Version
    published: date
    sources: tuple[RuleSource, ...]
    params: dict[Slug, Number] = Field(default_factory=dict)
    rules: tuple[Rule, ...]

    @model_validator(mode="after")
    def _ruleset_rules(self) -> RuleSet:
        problems: list[str] = []
        if not self.sources or not self.rules:
            problems.append("a rule set needs at least one source and one rule")
        source_ids = [s.id for s in self.sources]
        for sid in sorted({s for s in source_ids if source_ids.count(s) > 1}):
            problems.append(f"source id {sid!r} is declared more than once")
        for name, value in self.params.items():
            if not math.isfinite(value):
                problems.append(f"param {name!r} must be a finite number, got {value}")

        fillable = set(self.params) | set(INPUT_FIELDS) | {LEVELS_PLACEHOLDER}
        used_params: set[str] = set()
        first_entry: dict[str, int] = {}
        for number, rule in enumerate(self.rules, start=1):
            where = f"rule #{number} ({rule.id!r})"
            if rule.id in first_entry:
                problems.append(f"{where}: id duplicates rule #{first_entry[rule.id]}")
            else:
                first_entry[rule.id] = number
            if rule.source not in source_ids:
                problems.append(
                    f"{where}, field source: {rule.source!r} is not a declared source "
                    f"(declared: {', '.join(source_ids)})"
                )
            for i, clause in enumerate(rule.when):
                if clause.param is None:
                    continue
                used_params.add(clause.param)
                if clause.param not in self.params:
                    problems.append(
                        f"{where}, field when[{i}].param: {clause.param!r} is not in params "
                        f"(declared: {', '.join(self.params) or 'none'})"
                    )
            for name in placeholders(rule.text.en):
                used_params.add(name)
                if name not in fillable:
                    problems.append(
                        f"{where}, field text: {{{name}}} is neither a param, an input "
                        f"nor {{{LEVELS_PLACEHOLDER}}}"
                    )

        for name in sorted(set(self.params) - used_params):
            problems.append(f"param {name!r} is declared but no rule uses it")

        guarded = {
            clause.field
            for rule in self.rules
            if rule.outcome is not RuleOutcome.SUPPORTS
            for clause in rule.when
            if clause.op is Op.IS_MISSING
        }
        for spec in INPUT_FIELDS.values():
            if spec.optional and spec.name not in guarded:
                problems.append(
                    f"input {spec.name!r} can be missing, but no exclude or needs_review rule "
                    "checks it with is_missing: a missing value would pass silently"
                )

        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(rule.id for rule in self.rules)

    def get(self, rule_id: str) -> Rule:
        """The rule with this id; KeyError when there is none."""
        missing = f"no rule {rule_id!r} in eligibility rule set {self.version}"
        return loading.find_entry(self.rules, "id", rule_id, missing)

    def source(self, source_id: str) -> RuleSource:
        """The declared source with this id; KeyError when there is none."""
        missing = f"no source {source_id!r} in eligibility rule set {self.version}"
        return loading.find_entry(self.sources, "id", source_id, missing)


# --- Evaluation ------------------------------------------------------------------------


@dataclass(frozen=True)
class FiredRule:
    """One rule that fired, with its sentence filled in both languages."""

    rule_id: str
    outcome: RuleOutcome
    text_en: str
    text_pl: str
    source: str
    levels: tuple[str, ...] = ()

    def text(self, language: str) -> str:
        primary = language.replace("_", "-").split("-", 1)[0].lower()
        return self.text_pl if primary == "pl" else self.text_en


@dataclass(frozen=True)
class EligibilityResult:
    decision: Decision
    fired: tuple[FiredRule, ...]
    ruleset_version: str
    excluded_levels: tuple[str, ...] = ()


def _holds(clause: Clause, values: Mapping[str, Any], params: Mapping[str, float]) -> bool:
    value = values[clause.field]
    if clause.op is Op.IS_TRUE:
        return value is True
    if clause.op is Op.IS_FALSE:
        return value is False
    if clause.op is Op.IS_MISSING:
        return value is None or value == ()
    if clause.op is Op.INTERSECTS:
        return bool(set(value) & set(values[clause.other or ""]))
    if value is None:  # never guess: the field's is_missing rule speaks for it
        return False
    target = params[clause.param] if clause.param is not None else clause.value
    return COMPARISONS[clause.op](value, target)


_WORDS = {
    "en": {True: "yes", False: "no", None: "not recorded", (): "none"},
    "pl": {True: "tak", False: "nie", None: "brak danych", (): "brak"},
}


def _show(value: Any, language: str) -> str:
    if isinstance(value, bool) or value is None or value == ():
        return _WORDS[language][value]
    if isinstance(value, tuple):
        return ", ".join(value)
    if isinstance(value, float):
        text = f"{value:.6g}"
        return text.replace(".", ",") if language == "pl" else text
    return str(value)


def _sentence(template: str, language: str, values: Mapping[str, Any]) -> str:
    return template.format_map({name: _show(value, language) for name, value in values.items()})


def evaluate(inputs: EligibilityInputs, ruleset: RuleSet) -> EligibilityResult:
    """Decides eligibility and lists every rule that fired, in file order.

    not_eligible: a whole-episode exclusion fired, or level-scoped exclusions removed every
    target level. needs_review: a needs_review rule fired, or some (not all) target levels
    were excluded, because the injection plan must then change. eligible: otherwise.
    """
    values = inputs._values()
    params = dict(ruleset.params)
    fired: list[FiredRule] = []
    excluded: set[str] = set()
    whole_episode_excluded = needs_review = False
    for rule in ruleset.rules:
        if not all(_holds(clause, values, params) for clause in rule.when):
            continue
        levels: tuple[str, ...] = ()
        level_clause = rule.level_clause if rule.scope == "level" else None
        if level_clause is not None:
            others = set(values[level_clause.other or ""])
            levels = tuple(lv for lv in values[level_clause.field] if lv in others)
            excluded.update(levels)
        elif rule.outcome is RuleOutcome.EXCLUDE:
            whole_episode_excluded = True
        needs_review = needs_review or rule.outcome is RuleOutcome.NEEDS_REVIEW
        filling = {**params, **values, LEVELS_PLACEHOLDER: levels}
        fired.append(
            FiredRule(
                rule_id=rule.id,
                outcome=rule.outcome,
                text_en=_sentence(rule.text.en, "en", filling),
                text_pl=_sentence(rule.text.pl, "pl", filling),
                source=rule.source,
                levels=levels,
            )
        )

    targets = inputs.target_levels
    excluded_levels = tuple(lv for lv in targets if lv in excluded)
    if whole_episode_excluded or (targets and len(excluded_levels) == len(targets)):
        decision = Decision.NOT_ELIGIBLE
    elif needs_review or excluded_levels:
        decision = Decision.NEEDS_REVIEW
    else:
        decision = Decision.ELIGIBLE
    return EligibilityResult(
        decision=decision,
        fired=tuple(fired),
        ruleset_version=ruleset.version,
        excluded_levels=excluded_levels,
    )


# --- Loading ---------------------------------------------------------------------------


_RULE_SET_FILE = loading.ReferenceFile(
    RuleSet,
    RuleSetError,
    "eligibility rule set",
    entries={"rules": "rule", "sources": "source"},
    top_level="version, published, sources, params and rules",
    package=RULES_PACKAGE,
    resource=RULES_RESOURCE,
    packaged="rule set",
)


def parse_ruleset(text: str) -> RuleSet:
    """Parse and validate a rule set from YAML text.

    Raises RuleSetError naming the rule and field of every problem found.
    """
    return _RULE_SET_FILE.load(text)


@lru_cache(maxsize=1)
def current_ruleset() -> RuleSet:
    """The packaged rule set, loaded and validated once."""
    return _RULE_SET_FILE.load()


def available_versions() -> tuple[str, ...]:
    """The rule-set versions that can be loaded (only the packaged one, for now)."""
    return (current_ruleset().version,)


def load_ruleset(version: str | None = None) -> RuleSet:
    """The rule set with this version (None: the current packaged one).

    Raises UnknownRuleSetVersion for any version that is not available. A retired rule set
    is not kept yet, so re-evaluating an old decision under its own version is refused
    rather than silently done under the current rules.
    """
    current = current_ruleset()
    if version is None or version == current.version:
        return current
    raise UnknownRuleSetVersion(version, available_versions())
