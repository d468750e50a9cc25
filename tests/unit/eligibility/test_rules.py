"""The eligibility rules: the packaged rule set, what makes each rule fire, and the decision."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from importlib import resources
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from regenspine.catalog.conditions import levels_for_region
from regenspine.eligibility.rules import (
    INPUT_FIELDS,
    Decision,
    EligibilityInputs,
    EligibilityResult,
    RuleOutcome,
    RuleSetError,
    UnknownRuleSetVersion,
    evaluate,
    load_ruleset,
    parse_ruleset,
)

RULESET = load_ruleset()

#: A complete assessment with nothing against the injection and every reason for it.
CLEAN = EligibilityInputs(
    red_flag_positive=False,
    active_infection=False,
    active_malignancy=False,
    pregnancy=False,
    bleeding_disorder=False,
    immunosuppression=False,
    anticoagulant=False,
    pain_weeks=52,
    conservative_treatment_weeks=26,
    bmi=27.5,
    target_levels=("L4-L5",),
    prior_fusion_levels=(),
    max_disc_height_loss_percent=20.0,
    min_pfirrmann_at_target=3,
    max_pfirrmann_at_target=4,
    modic_at_target=False,
)


def patient(**changes: Any) -> EligibilityInputs:
    """The clean assessment with some findings changed."""
    return dataclasses.replace(CLEAN, **changes)


#: For every rule, a patient built so that this rule fires (and, unless it only supports,
#: no other exclude or review rule does).
FIRES_FOR: dict[str, EligibilityInputs] = {
    "EL-001": patient(red_flag_positive=True),
    "EL-002": patient(active_infection=True),
    "EL-003": patient(active_malignancy=True),
    "EL-004": patient(pregnancy=True),
    "EL-005": patient(bleeding_disorder=True),
    "EL-006": patient(target_levels=("L4-L5", "L5-S1"), prior_fusion_levels=("L4-L5",)),
    "EL-007": patient(immunosuppression=True),
    "EL-008": patient(anticoagulant=True),
    "EL-009": patient(pain_weeks=None),
    "EL-010": patient(pain_weeks=4),
    "EL-011": patient(conservative_treatment_weeks=None),
    "EL-012": patient(conservative_treatment_weeks=0),
    "EL-013": patient(bmi=None),
    "EL-014": patient(bmi=36.4),
    "EL-015": patient(target_levels=()),
    "EL-016": patient(max_disc_height_loss_percent=None),
    "EL-017": patient(max_disc_height_loss_percent=60.0),
    "EL-018": patient(min_pfirrmann_at_target=None, max_pfirrmann_at_target=None),
    "EL-019": patient(modic_at_target=None),
    "EL-020": CLEAN,
    "EL-021": CLEAN,
    "EL-022": CLEAN,
    "EL-023": CLEAN,
}

#: For every rule, a patient on whom it must stay quiet: the clean patient, except for the
#: rules that support the injection, which do fire on the clean patient.
QUIET_FOR: dict[str, EligibilityInputs] = {
    rule_id: CLEAN
    for rule_id in FIRES_FOR
    if rule_id not in {"EL-020", "EL-021", "EL-022", "EL-023"}
} | {
    "EL-020": patient(min_pfirrmann_at_target=2, max_pfirrmann_at_target=5),
    "EL-021": patient(modic_at_target=True),
    "EL-022": patient(pain_weeks=12),
    "EL-023": patient(conservative_treatment_weeks=12),
}


def fired_ids(result: EligibilityResult) -> list[str]:
    return [f.rule_id for f in result.fired]


def against(result: EligibilityResult) -> list[str]:
    """The fired rules that are not reasons in favour."""
    return [f.rule_id for f in result.fired if f.outcome is not RuleOutcome.SUPPORTS]


# --- The packaged rule set -------------------------------------------------------------


def test_the_packaged_rule_set_has_a_version_and_every_rule_cites_a_declared_source() -> None:
    declared = {s.id for s in RULESET.sources}
    assert RULESET.version == "2026.11.1"
    assert RULESET.rules
    for rule in RULESET.rules:
        assert rule.source in declared
        assert rule.text.en.strip() and rule.text.pl.strip()
        assert rule.text.en != rule.text.pl


def test_the_packaged_rule_set_keeps_the_clinics_thresholds_as_parameters() -> None:
    assert RULESET.params["bmi_review_above"] == 35
    assert RULESET.params["disc_height_loss_review_above_percent"] == 50
    assert RULESET.params["min_pain_weeks"] == 6
    assert RULESET.params["min_conservative_weeks"] == 6


def test_every_rule_in_the_file_has_a_patient_built_to_fire_it() -> None:
    assert set(FIRES_FOR) == set(RULESET.rule_ids)
    assert set(QUIET_FOR) == set(RULESET.rule_ids)


@pytest.mark.parametrize("rule_id", RULESET.rule_ids)
def test_each_rule_fires_for_the_patient_built_for_it(rule_id: str) -> None:
    rule = RULESET.get(rule_id)
    result = evaluate(FIRES_FOR[rule_id], RULESET)

    assert rule_id in fired_ids(result)
    if rule.outcome is RuleOutcome.SUPPORTS:
        assert result.decision is Decision.ELIGIBLE
        return
    # The patient isolates the rule: nothing else speaks against the injection.
    assert against(result) == [rule_id]
    if rule.outcome is RuleOutcome.NEEDS_REVIEW or rule.scope == "level":
        assert result.decision is Decision.NEEDS_REVIEW
    else:
        assert result.decision is Decision.NOT_ELIGIBLE


@pytest.mark.parametrize("rule_id", RULESET.rule_ids)
def test_each_rule_stays_quiet_for_a_patient_without_its_finding(rule_id: str) -> None:
    assert rule_id not in fired_ids(evaluate(QUIET_FOR[rule_id], RULESET))


# --- Decisions -------------------------------------------------------------------------


def test_a_clean_complete_assessment_is_eligible_with_only_supporting_reasons() -> None:
    result = evaluate(CLEAN, RULESET)

    assert result.decision is Decision.ELIGIBLE
    assert result.fired
    assert {f.outcome for f in result.fired} == {RuleOutcome.SUPPORTS}
    supports = [r.id for r in RULESET.rules if r.outcome is RuleOutcome.SUPPORTS]
    assert fired_ids(result) == supports
    assert result.excluded_levels == ()
    assert result.ruleset_version == RULESET.version


def test_a_red_flag_makes_the_patient_not_eligible_even_when_everything_else_supports() -> None:
    result = evaluate(patient(red_flag_positive=True), RULESET)

    assert result.decision is Decision.NOT_ELIGIBLE
    assert fired_ids(result)[0] == "EL-001"
    assert any(f.outcome is RuleOutcome.SUPPORTS for f in result.fired)


def test_prior_fusion_at_one_of_two_target_levels_excludes_only_that_level() -> None:
    result = evaluate(
        patient(target_levels=("L4-L5", "L5-S1"), prior_fusion_levels=("L4-L5",)), RULESET
    )

    assert result.excluded_levels == ("L4-L5",)
    assert result.decision is not Decision.NOT_ELIGIBLE
    # The plan still names a level that cannot be injected, so a doctor must change it.
    assert result.decision is Decision.NEEDS_REVIEW
    fusion = next(f for f in result.fired if f.rule_id == "EL-006")
    assert fusion.outcome is RuleOutcome.EXCLUDE
    assert fusion.levels == ("L4-L5",)
    assert "L4-L5" in fusion.text_en and "L5-S1" not in fusion.text_en
    assert "L4-L5" in fusion.text_pl


def test_fusion_at_the_only_target_level_makes_the_patient_not_eligible() -> None:
    result = evaluate(patient(target_levels=("L5-S1",), prior_fusion_levels=("L5-S1",)), RULESET)

    assert result.decision is Decision.NOT_ELIGIBLE
    assert result.excluded_levels == ("L5-S1",)


def test_fusion_at_every_target_level_makes_the_patient_not_eligible() -> None:
    result = evaluate(
        patient(target_levels=("L4-L5", "L5-S1"), prior_fusion_levels=("L3-L4", "L4-L5", "L5-S1")),
        RULESET,
    )

    assert result.decision is Decision.NOT_ELIGIBLE
    assert result.excluded_levels == ("L4-L5", "L5-S1")


def test_fusion_away_from_the_target_levels_changes_nothing() -> None:
    result = evaluate(patient(prior_fusion_levels=("L2-L3",)), RULESET)

    assert result.decision is Decision.ELIGIBLE
    assert result.excluded_levels == ()


def test_a_missing_bmi_needs_the_doctors_review() -> None:
    result = evaluate(patient(bmi=None), RULESET)

    assert result.decision is Decision.NEEDS_REVIEW
    assert against(result) == ["EL-013"]


@pytest.mark.parametrize("name", [name for name, spec in INPUT_FIELDS.items() if spec.optional])
def test_no_input_that_can_be_missing_lets_a_patient_through_when_it_is_missing(name: str) -> None:
    changes: dict[str, Any] = {name: None}
    if name in ("min_pfirrmann_at_target", "max_pfirrmann_at_target"):
        changes = {"min_pfirrmann_at_target": None, "max_pfirrmann_at_target": None}

    assert evaluate(patient(**changes), RULESET).decision is Decision.NEEDS_REVIEW


def test_several_findings_give_every_reason_in_file_order() -> None:
    result = evaluate(patient(active_infection=True, bmi=41.0, anticoagulant=True), RULESET)

    assert result.decision is Decision.NOT_ELIGIBLE
    assert against(result) == ["EL-002", "EL-008", "EL-014"]
    order = list(RULESET.rule_ids)
    assert fired_ids(result) == sorted(fired_ids(result), key=order.index)


def test_rule_texts_are_filled_in_with_the_patients_values_in_both_languages() -> None:
    result = evaluate(patient(bmi=36.4, pain_weeks=4), RULESET)
    texts = {f.rule_id: f for f in result.fired}

    assert texts["EL-014"].text_en.startswith("BMI 36.4 is above 35")
    assert texts["EL-014"].text_pl.startswith("BMI 36,4 przekracza 35")
    assert texts["EL-010"].text_en == "The pain has lasted 4 weeks, less than 6."
    assert texts["EL-010"].text("pl_PL") == "Ból trwa 4 tyg., czyli krócej niż 6 tyg."
    assert texts["EL-014"].source == "trial_exclusions_common"


def test_a_boundary_value_sits_on_the_side_the_rule_text_promises() -> None:
    # "above 35" and "less than 6 weeks": exactly 35 and exactly 6 do not need review.
    result = evaluate(patient(bmi=35.0, pain_weeks=6, conservative_treatment_weeks=6), RULESET)

    assert against(result) == []


# --- Versions --------------------------------------------------------------------------


def test_the_current_rule_set_can_be_asked_for_by_its_version() -> None:
    assert load_ruleset(RULESET.version) is RULESET
    assert load_ruleset(None) is RULESET


def test_an_unknown_rule_set_version_is_refused_naming_the_version() -> None:
    with pytest.raises(UnknownRuleSetVersion) as refused:
        load_ruleset("1999.1.1")

    assert refused.value.version == "1999.1.1"
    assert "1999.1.1" in str(refused.value)
    assert isinstance(refused.value, ValueError)


# --- Inputs ----------------------------------------------------------------------------


def test_the_inputs_a_decision_saw_are_stored_as_json_and_read_back_unchanged() -> None:
    inputs = patient(target_levels=("L4-L5", "L5-S1"), prior_fusion_levels=("L4-L5",), bmi=None)
    stored = json.loads(json.dumps(inputs.as_dict()))

    assert stored["target_levels"] == ["L4-L5", "L5-S1"]
    assert stored["bmi"] is None
    assert EligibilityInputs.from_dict(stored) == inputs


@pytest.mark.parametrize(
    "changes",
    [
        {"pregnancy": None},
        {"active_infection": "no"},
        {"modic_at_target": 0},
        {"pain_weeks": -1},
        {"pain_weeks": 6.5},
        {"bmi": float("nan")},
        {"bmi": True},
        {"min_pfirrmann_at_target": None},
        {"min_pfirrmann_at_target": 4, "max_pfirrmann_at_target": 3},
        {"min_pfirrmann_at_target": 0},
        {"max_disc_height_loss_percent": 120.0},
        {"target_levels": "L4-L5"},
        {"target_levels": ("L4-L5", "L4-L5")},
    ],
)
def test_inputs_that_would_let_a_gap_pass_as_no_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        patient(**changes)


def test_level_lists_given_as_lists_are_kept_as_tuples() -> None:
    inputs = patient(target_levels=["L4-L5"], prior_fusion_levels=[])
    assert inputs.target_levels == ("L4-L5",)
    assert inputs.prior_fusion_levels == ()


# --- Refusing a broken rule set --------------------------------------------------------


def packaged_data() -> dict[str, Any]:
    text = resources.files("regenspine.reference").joinpath("eligibility_rules.yaml")
    return yaml.safe_load(text.read_text("utf-8"))


def rule(data: dict[str, Any], rule_id: str) -> dict[str, Any]:
    return next(r for r in data["rules"] if r["id"] == rule_id)


def refusal(change: Callable[[dict[str, Any]], object]) -> str:
    data = packaged_data()
    change(data)
    with pytest.raises(RuleSetError) as refused:
        parse_ruleset(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return str(refused.value)


def test_the_packaged_file_passes_through_the_test_loader_unchanged() -> None:
    data = packaged_data()
    assert parse_ruleset(yaml.safe_dump(data, allow_unicode=True)) == RULESET


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            lambda d: rule(d, "EL-004").update(id="EL-002"),
            ["rule #4 ('EL-002')", "duplicates rule #2"],
            id="duplicate rule id",
        ),
        pytest.param(
            lambda d: rule(d, "EL-002").update(source="nice_2099"),
            ["'EL-002'", "'nice_2099' is not a declared source"],
            id="unknown source",
        ),
        pytest.param(
            lambda d: rule(d, "EL-002")["when"][0].update(op="is_maybe"),
            ["'EL-002'", "when[0].op", "is_true"],
            id="unknown op",
        ),
        pytest.param(
            lambda d: rule(d, "EL-002")["when"][0].update(field="active_infektion"),
            ["'EL-002'", "unknown input field 'active_infektion'"],
            id="unknown field",
        ),
        pytest.param(
            lambda d: rule(d, "EL-014")["when"][0].update(param="bmi_limit"),
            ["'EL-014'", "'bmi_limit' is not in params"],
            id="unknown param",
        ),
        pytest.param(
            lambda d: rule(d, "EL-014")["text"].update(
                en="BMI {bmii} is high.", pl="BMI {bmii} jest wysokie."
            ),
            ["'EL-014'", "{bmii}"],
            id="unknown placeholder",
        ),
        pytest.param(
            lambda d: rule(d, "EL-014")["text"].update(pl="BMI jest wysokie."),
            ["'EL-014'", "same placeholders"],
            id="placeholders differ between languages",
        ),
        pytest.param(
            lambda d: rule(d, "EL-002").update(scope="level"),
            ["'EL-002'", "scope level needs exactly one clause"],
            id="level scope without levels",
        ),
        pytest.param(
            lambda d: rule(d, "EL-004").update(
                when=[{"field": "pregnancy", "op": "gt", "value": 1}]
            ),
            ["'EL-004'", "needs a number input"],
            id="comparing a yes/no input with a number",
        ),
        pytest.param(
            lambda d: rule(d, "EL-013").update(
                when=[{"field": "active_infection", "op": "is_missing"}]
            ),
            ["'EL-013'", "always recorded"],
            id="is_missing on an input that is always recorded",
        ),
        pytest.param(
            lambda d: d["rules"].remove(rule(d, "EL-013")),
            ["input 'bmi' can be missing", "pass silently"],
            id="no review when an input is missing",
        ),
        pytest.param(
            lambda d: rule(d, "EL-002").update(severity="high"),
            ["'EL-002'", "severity", "Extra inputs are not permitted"],
            id="unexpected key",
        ),
        pytest.param(
            lambda d: d["params"].update(max_age=80),
            ["param 'max_age' is declared but no rule uses it"],
            id="unused param",
        ),
        pytest.param(
            lambda d: d.update(version="latest"),
            ["field version"],
            id="version is not CalVer",
        ),
    ],
)
def test_a_broken_rule_set_is_refused_with_a_message_naming_the_rule(
    change: Callable[[dict[str, Any]], object], expected: list[str]
) -> None:
    message = refusal(change)
    for part in expected:
        assert part in message


def test_a_rule_set_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(RuleSetError, match="YAML mapping"):
        parse_ruleset("- just a list")


# --- Properties over random patients ---------------------------------------------------

LUMBAR_LEVELS = levels_for_region("lumbar")
level_lists = st.lists(st.sampled_from(LUMBAR_LEVELS), unique=True, max_size=3).map(tuple)
weeks = st.none() | st.integers(min_value=0, max_value=520)
pfirrmann = st.none() | st.tuples(st.integers(1, 5), st.integers(1, 5)).map(sorted)


@st.composite
def patients(draw: st.DrawFn) -> EligibilityInputs:
    grades = draw(pfirrmann)
    return EligibilityInputs(
        red_flag_positive=draw(st.booleans()),
        active_infection=draw(st.booleans()),
        active_malignancy=draw(st.booleans()),
        pregnancy=draw(st.booleans()),
        bleeding_disorder=draw(st.booleans()),
        immunosuppression=draw(st.booleans()),
        anticoagulant=draw(st.booleans()),
        pain_weeks=draw(weeks),
        conservative_treatment_weeks=draw(weeks),
        bmi=draw(st.none() | st.floats(min_value=14, max_value=60)),
        target_levels=draw(level_lists),
        prior_fusion_levels=draw(level_lists),
        max_disc_height_loss_percent=draw(st.none() | st.floats(min_value=0, max_value=100)),
        min_pfirrmann_at_target=grades[0] if grades else None,
        max_pfirrmann_at_target=grades[1] if grades else None,
        modic_at_target=draw(st.none() | st.booleans()),
    )


@given(patients())
def test_a_patient_is_never_eligible_once_any_exclusion_fired(inputs: EligibilityInputs) -> None:
    result = evaluate(inputs, RULESET)
    outcomes = {f.outcome for f in result.fired}

    if RuleOutcome.EXCLUDE in outcomes:
        assert result.decision is not Decision.ELIGIBLE
    else:
        assert result.decision is not Decision.NOT_ELIGIBLE
    if not outcomes - {RuleOutcome.SUPPORTS}:
        assert result.decision is Decision.ELIGIBLE
    if RuleOutcome.NEEDS_REVIEW in outcomes:
        assert result.decision is not Decision.ELIGIBLE


@given(patients())
def test_not_eligible_means_a_whole_episode_exclusion_or_no_target_level_left(
    inputs: EligibilityInputs,
) -> None:
    result = evaluate(inputs, RULESET)
    whole_episode = any(f.outcome is RuleOutcome.EXCLUDE and not f.levels for f in result.fired)
    every_target_gone = bool(inputs.target_levels) and set(inputs.target_levels) <= set(
        result.excluded_levels
    )

    assert (result.decision is Decision.NOT_ELIGIBLE) == (whole_episode or every_target_gone)


@given(patients())
def test_excluded_levels_are_target_levels_named_by_the_rules_that_fired(
    inputs: EligibilityInputs,
) -> None:
    result = evaluate(inputs, RULESET)
    named = {lv for f in result.fired if f.outcome is RuleOutcome.EXCLUDE for lv in f.levels}

    assert set(result.excluded_levels) == named
    assert set(result.excluded_levels) <= set(inputs.target_levels)
    assert set(result.excluded_levels) <= set(inputs.prior_fusion_levels)


@given(patients())
def test_every_fired_rule_is_listed_once_in_file_order_with_its_text_filled(
    inputs: EligibilityInputs,
) -> None:
    result = evaluate(inputs, RULESET)
    ids = fired_ids(result)
    order = list(RULESET.rule_ids)

    assert ids == sorted(set(ids), key=order.index)
    for fired in result.fired:
        assert "{" not in fired.text_en and "{" not in fired.text_pl
        assert fired.outcome is RULESET.get(fired.rule_id).outcome
