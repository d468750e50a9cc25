"""What an eligibility decision looks at: the inputs, checked, and the kind of each one."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class EligibilityInputs:
    """Everything a decision looks at; None (or no levels) means "not recorded"."""

    red_flag_positive: bool
    active_infection: bool
    active_malignancy: bool
    pregnancy: bool
    bleeding_disorder: bool
    immunosuppression: bool
    anticoagulant: bool
    pain_weeks: int | None
    conservative_treatment_weeks: int | None
    bmi: float | None
    target_levels: tuple[str, ...]
    prior_fusion_levels: tuple[str, ...]
    max_disc_height_loss_percent: float | None
    min_pfirrmann_at_target: int | None
    max_pfirrmann_at_target: int | None
    modic_at_target: bool | None

    def __post_init__(self) -> None:
        for name, spec in INPUT_FIELDS.items():
            value = getattr(self, name)
            if spec.kind is FieldKind.LEVELS:
                object.__setattr__(self, name, _levels(name, value))
            elif value is None:
                if not spec.optional:
                    raise ValueError(f"{name} must be given (True or False), not None")
            elif spec.kind is FieldKind.FLAG:
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be True or False, got {value!r}")
            else:
                _check_number(name, value, integer=spec.integer)
        low, high = self.min_pfirrmann_at_target, self.max_pfirrmann_at_target
        if (low is None) != (high is None):
            raise ValueError("give both Pfirrmann grades at the target levels, or neither")
        if low is not None and high is not None and not 1 <= low <= high <= 5:
            raise ValueError(
                f"Pfirrmann grades must satisfy 1 <= min <= max <= 5, got {low}, {high}"
            )
        loss = self.max_disc_height_loss_percent
        if loss is not None and loss > 100:
            raise ValueError(f"max_disc_height_loss_percent cannot exceed 100, got {loss}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe copy (levels as lists), for storing exactly what a decision saw."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in self._values().items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EligibilityInputs:
        """The inputs back from ``as_dict()`` (to re-run a stored decision); all keys required."""
        unknown = sorted(set(data) - set(INPUT_FIELDS))
        missing = [name for name in INPUT_FIELDS if name not in data]
        if unknown or missing:
            raise ValueError(
                f"eligibility inputs do not match: missing {missing or 'none'}, "
                f"unknown {unknown or 'none'}"
            )
        return cls(**dict(data))

    def _values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in INPUT_FIELDS}


def _levels(name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(level, str) and level for level in value
    ):
        raise ValueError(f"{name} must be a sequence of level names such as 'L4-L5'")
    if len(set(value)) != len(value):
        raise ValueError(f"{name} lists a level twice: {list(value)}")
    return tuple(value)


def _check_number(name: str, value: Any, *, integer: bool) -> None:
    allowed = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed):
        raise ValueError(f"{name} must be {'a whole' if integer else 'a'} number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of at least 0, got {value!r}")


class FieldKind(StrEnum):
    FLAG = "flag"
    NUMBER = "number"
    LEVELS = "levels"


@dataclass(frozen=True)
class InputField:
    name: str
    kind: FieldKind
    optional: bool  # may be None (or, for levels, empty) - needs an is_missing rule
    integer: bool = False


def _input_fields() -> dict[str, InputField]:
    """The inputs a rule may name, read off EligibilityInputs so the two cannot drift."""
    hints = typing.get_type_hints(EligibilityInputs)
    found: dict[str, InputField] = {}
    for spec in dataclasses.fields(EligibilityInputs):
        hint = hints[spec.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next(a for a in args if a is not type(None)) if optional else hint
        if base is bool:
            found[spec.name] = InputField(spec.name, FieldKind.FLAG, optional)
        elif base in (int, float):
            found[spec.name] = InputField(spec.name, FieldKind.NUMBER, optional, base is int)
        elif typing.get_origin(base) is tuple and typing.get_args(base) == (str, Ellipsis):
            found[spec.name] = InputField(spec.name, FieldKind.LEVELS, optional=False)
        else:  # pragma: no cover - a new kind of input needs a decision here first
            raise TypeError(f"EligibilityInputs.{spec.name}: unsupported type {hint}")
    return found


INPUT_FIELDS: dict[str, InputField] = _input_fields()
