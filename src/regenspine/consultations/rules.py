"""Pure checks for consultation input: allowed values, levels inside the region, diagnoses that fit
the catalogue (a level outside a condition's region is refused, a side only where it applies)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from regenspine.catalog.conditions import ConditionCatalogue, levels_for_region
from regenspine.errors import N_, InvalidInput, Localised, Message
from regenspine.text import UNSTORABLE_MESSAGE, unstorable

MODALITIES = ("mri", "ct", "xray")
HERNIATION = ("none", "bulge", "protrusion", "extrusion", "sequestration")
MODIC = ("none", "1", "2", "3")
STENOSIS = ("none", "mild", "moderate", "severe")
SIDES = ("left", "right", "bilateral")
TEXT_MAX = 2000
EARLIEST_IMAGING = date(1900, 1, 1)

# The words shown for stored values; the values themselves stay in English in the database.
VALUE_LABELS: dict[str, str] = {
    "none": N_("none"),
    "bulge": N_("bulge"),
    "protrusion": N_("protrusion"),
    "extrusion": N_("extrusion"),
    "sequestration": N_("sequestration"),
    "mild": N_("mild"),
    "moderate": N_("moderate"),
    "severe": N_("severe"),
    "left": N_("left"),
    "right": N_("right"),
    "bilateral": N_("bilateral"),
}
REGION_LABELS: dict[str, str] = {
    "lumbar": N_("lumbar"),
    "cervical": N_("cervical"),
    "thoracic": N_("thoracic"),
    "spinal": N_("spinal"),
}


def _shown(raw: Any) -> str:
    """A value as text that is safe to compare and to quote back in a refusal: anything that is
    not plain storable text becomes "?", which matches no allowed value."""
    return raw if isinstance(raw, str) and not unstorable(raw) and len(raw) <= 100 else "?"


def _region(name: str) -> Message:
    return Message(REGION_LABELS.get(name, name))


def all_levels() -> list[str]:
    return [lv for region in ("cervical", "thoracic", "lumbar") for lv in levels_for_region(region)]


@dataclass(frozen=True)
class LevelFinding:
    pfirrmann: int | None = None
    herniation: str = "none"
    annular_fissure: bool = False
    modic: str = "none"
    stenosis: str = "none"
    disc_height_loss_percent: float | None = None


@dataclass(frozen=True)
class Diagnosis:
    condition: str
    levels: tuple[str, ...] = ()
    side: str | None = None


@dataclass(frozen=True)
class ConsultationData:
    presenting_complaint: str
    pain_weeks: int | None
    physiotherapy_weeks: int | None
    prior_treatments: str | None
    prior_fusion_levels: tuple[str, ...]
    medications: str | None
    anticoagulant: bool
    history_cancer: bool
    active_malignancy: bool
    active_infection: bool
    bleeding_disorder: bool
    pregnancy: bool
    immunosuppression: bool
    bmi: float | None
    imaging_modality: str | None
    imaging_date: date | None
    level_findings: dict[str, LevelFinding] = field(default_factory=dict)
    diagnoses: tuple[Diagnosis, ...] = ()
    target_levels: tuple[str, ...] = ()


FIELDS = (
    "presenting_complaint",
    "pain_weeks",
    "physiotherapy_weeks",
    "prior_treatments",
    "prior_fusion_levels",
    "medications",
    "anticoagulant",
    "history_cancer",
    "active_malignancy",
    "active_infection",
    "bleeding_disorder",
    "pregnancy",
    "immunosuppression",
    "bmi",
    "imaging_modality",
    "imaging_date",
    "level_findings",
    "diagnoses",
    "target_levels",
)
BOOLEANS = (
    "anticoagulant",
    "history_cancer",
    "active_malignancy",
    "active_infection",
    "bleeding_disorder",
    "pregnancy",
    "immunosuppression",
)


def _int(raw: Any, key: str, lo: int, hi: int, errors: dict[str, Message]) -> int | None:
    if raw is None or raw == "":
        return None
    # A whole number, or the digits of one from a form; never a truth value (True is 1 in
    # Python), never a fraction silently cut off, never more digits than any bound needs.
    if isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit():
        raw = int(raw.strip()) if len(raw.strip()) <= 9 else hi + 1
    if isinstance(raw, bool) or not isinstance(raw, int):
        errors[key] = Message(N_("Enter a whole number."))
        return None
    value = raw
    if not lo <= value <= hi:
        errors[key] = Message(N_("Enter a number from %(lo)s to %(hi)s."), lo=lo, hi=hi)
        return None
    return value


def _float(raw: Any, key: str, lo: float, hi: float, errors: dict[str, Message]) -> float | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float | str) or len(str(raw)) > 20:
        errors[key] = Message(N_("Enter a number."))
        return None
    try:
        value = float(str(raw).replace(",", "."))
    except ValueError:
        errors[key] = Message(N_("Enter a number."))
        return None
    if not lo <= value <= hi:  # also refuses NaN and infinity
        errors[key] = Message(N_("Enter a number from %(lo)s to %(hi)s."), lo=lo, hi=hi)
        return None
    return value


def _text(raw: Any, key: str, errors: dict[str, Message], required: bool = False) -> str | None:
    if raw is not None and not isinstance(raw, str):
        errors[key] = Message(N_("Enter this as text."))
        return None
    value = "" if raw is None else raw.strip()
    if unstorable(value):
        errors[key] = Message(UNSTORABLE_MESSAGE)
        return None
    if required and not value:
        errors[key] = Message(N_("This field is required."))
    if len(value) > TEXT_MAX:
        errors[key] = Message(N_("This field may have at most %(max)d characters."), max=TEXT_MAX)
    return value or None


def _levels(
    raw: Any, key: str, allowed: Sequence[str], errors: dict[str, Message], region_name: str
) -> tuple[str, ...]:
    if raw in (None, ""):
        return ()
    items = raw if isinstance(raw, list | tuple) else str(raw).replace(";", ",").split(",")
    levels = tuple(dict.fromkeys(_shown(x).strip().upper() for x in items if _shown(x).strip()))
    wrong = [lv for lv in levels if lv not in allowed]
    if wrong:
        errors[key] = Message(
            N_("%(levels)s is not a %(region)s disc level (allowed: %(first)s to %(last)s)."),
            levels=", ".join(wrong),
            region=_region(region_name),
            first=allowed[0],
            last=allowed[-1],
        )
    return levels


def validate_consultation(
    raw: Mapping[str, Any], region: str, catalogue: ConditionCatalogue, today: date
) -> ConsultationData:
    """Checks a consultation for an episode in `region`; raises InvalidInput naming each field."""
    errors: dict[str, Message] = {}
    unknown = set(raw) - set(FIELDS)
    if unknown:
        errors["_form"] = Message(
            N_("Unknown fields were sent: %(fields)s."), fields=", ".join(sorted(unknown))
        )
    region_levels = levels_for_region(region)
    complaint = _text(raw.get("presenting_complaint"), "presenting_complaint", errors, True)
    flags = {}
    for key in BOOLEANS:
        # A contraindication is answered, never assumed: a missing answer, or "Y", "tak" or
        # "positive" where true or false belongs, is refused rather than stored as "no".
        # (The assessment form turns its unticked boxes into false itself.)
        value = raw.get(key)
        if not isinstance(value, bool):
            errors[key] = Message(N_("Answer yes or no."))
            value = False
        flags[key] = value
    modality = _text(raw.get("imaging_modality"), "imaging_modality", errors)
    if modality and modality.lower() not in MODALITIES:
        errors["imaging_modality"] = Message(N_("Choose MRI, CT or X-ray."))
    imaging_date = None
    if raw.get("imaging_date"):
        try:
            if not isinstance(raw["imaging_date"], str):
                raise ValueError
            imaging_date = date.fromisoformat(raw["imaging_date"])
        except ValueError:
            errors["imaging_date"] = Message(N_("Enter the date as YYYY-MM-DD."))
        else:
            if imaging_date > today:
                errors["imaging_date"] = Message(N_("The imaging date cannot be in the future."))
            elif imaging_date < EARLIEST_IMAGING:
                errors["imaging_date"] = Message(
                    N_("The imaging date cannot be before %(date)s."),
                    date=EARLIEST_IMAGING.isoformat(),
                )

    findings: dict[str, LevelFinding] = {}
    raw_findings = raw.get("level_findings") or {}
    if not isinstance(raw_findings, Mapping):
        errors["level_findings"] = Message(N_("Imaging findings must be given per level."))
        raw_findings = {}
    for level, data in raw_findings.items():
        level = _shown(level).strip().upper()
        key = f"level_findings.{level}"
        if level not in region_levels:
            errors[key] = Message(
                N_("%(levels)s is not a %(region)s disc level (allowed: %(first)s to %(last)s)."),
                levels=level,
                region=_region(region),
                first=region_levels[0],
                last=region_levels[-1],
            )
            continue
        if not isinstance(data, Mapping):
            errors[key] = Message(N_("Imaging findings must be given per level."))
            continue
        pf = _int(data.get("pfirrmann"), key, 1, 5, errors)
        herniation = data.get("herniation") or "none"
        modic = data.get("modic") or "none"
        stenosis = data.get("stenosis") or "none"
        if herniation not in HERNIATION or modic not in MODIC or stenosis not in STENOSIS:
            errors[key] = Message(
                N_("Choose the listed values for herniation, Modic change and stenosis.")
            )
        fissure = data.get("annular_fissure", False)
        if not isinstance(fissure, bool):
            errors[key] = Message(N_("Answer yes or no."))
            fissure = False
        loss = _float(data.get("disc_height_loss_percent"), key, 0, 100, errors)
        findings[level] = LevelFinding(
            pf, str(herniation), fissure, str(modic), str(stenosis), loss
        )

    diagnoses: list[Diagnosis] = []
    raw_diagnoses = raw.get("diagnoses") or []
    if not isinstance(raw_diagnoses, list):
        raw_diagnoses = []
        errors["diagnoses"] = Message(N_("Add at least one diagnosis from the catalogue."))
    for n, item in enumerate(raw_diagnoses):
        key = f"diagnoses.{n}"
        if not isinstance(item, Mapping):
            errors[key] = Message(N_("Choose a condition from the catalogue."))
            continue
        code = _shown(item.get("condition") or "")
        try:
            condition = catalogue.get(code)
        except KeyError:
            errors[key] = Message(N_("Choose a condition from the catalogue."))
            continue
        label = Localised({"en": condition.label("en"), "pl": condition.label("pl")})
        if region not in [str(r) for r in condition.regions]:
            errors[key] = Message(
                N_("%(condition)s is not a %(region)s condition."),
                condition=label,
                region=_region(region),
            )
            continue
        levels = _levels(item.get("levels"), key, region_levels, errors, region)
        if condition.level_applies and not levels and key not in errors:
            errors[key] = Message(N_("%(condition)s needs the spinal level(s)."), condition=label)
        if not condition.level_applies and levels:
            errors[key] = Message(
                N_("%(condition)s takes no spinal level: clear the levels ticked for it."),
                condition=label,
            )
        side = _shown(item.get("side") or "") or None
        if condition.side_applies and side not in SIDES:
            errors[key] = Message(
                N_("%(condition)s needs the side: left, right or bilateral."), condition=label
            )
        if not condition.side_applies and side:
            errors[key] = Message(
                N_("%(condition)s takes no side: clear the side chosen for it."), condition=label
            )
        diagnoses.append(Diagnosis(code, levels, side))
    if (
        not diagnoses
        and "diagnoses" not in errors
        and not any(k.startswith("diagnoses.") for k in errors)
    ):
        errors["diagnoses"] = Message(N_("Add at least one diagnosis from the catalogue."))

    data = ConsultationData(
        presenting_complaint=complaint or "",
        pain_weeks=_int(raw.get("pain_weeks"), "pain_weeks", 0, 2600, errors),
        physiotherapy_weeks=_int(
            raw.get("physiotherapy_weeks"), "physiotherapy_weeks", 0, 2600, errors
        ),
        prior_treatments=_text(raw.get("prior_treatments"), "prior_treatments", errors),
        prior_fusion_levels=_levels(
            raw.get("prior_fusion_levels"), "prior_fusion_levels", all_levels(), errors, "spinal"
        ),
        medications=_text(raw.get("medications"), "medications", errors),
        bmi=_float(raw.get("bmi"), "bmi", 10, 90, errors),
        imaging_modality=modality.lower() if modality else None,
        imaging_date=imaging_date,
        level_findings=findings,
        diagnoses=tuple(diagnoses),
        target_levels=_levels(
            raw.get("target_levels"), "target_levels", region_levels, errors, region
        ),
        **flags,
    )
    if errors:
        raise InvalidInput(errors)
    return data
