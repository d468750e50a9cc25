"""The red-flag screening: the packaged questions, which region asks which, and the scoring."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from regenspine.catalog.conditions import SpinalRegion
from regenspine.eligibility.red_flags import (
    IncompleteScreening,
    RedFlagCategory,
    RedFlagError,
    disagreements,
    get_red_flags,
    items_for_region,
    load_red_flags,
    screen,
)

RED_FLAGS = get_red_flags()
REGIONS = [region.value for region in SpinalRegion]


def all_no(region: str) -> dict[str, bool]:
    return {item.id: False for item in items_for_region(region)}


def ids(region: str, category: RedFlagCategory | None = None) -> set[str]:
    return {i.id for i in items_for_region(region) if category is None or i.category is category}


# --- The packaged questions ------------------------------------------------------------


def test_the_packaged_list_asks_about_every_kind_of_serious_spinal_pathology() -> None:
    assert RED_FLAGS.version == "2026.11.1"
    assert {item.category for item in RED_FLAGS.items} == set(RedFlagCategory)


def test_the_questions_the_clinic_relies_on_are_all_there() -> None:
    expected = {
        # cauda equina
        "saddle_anaesthesia",
        "bladder_dysfunction",
        "bowel_dysfunction",
        "bilateral_leg_symptoms",
        "severe_leg_weakness",
        "sexual_dysfunction",
        # cancer
        "history_of_cancer",
        "unexplained_weight_loss",
        "age_over_50_new_pain",
        "night_pain",
        # infection
        "fever_or_systemic_illness",
        "intravenous_drug_use",
        "immunosuppression",
        "recent_bacterial_infection",
        "recent_spinal_procedure",
        # fracture
        "significant_trauma",
        "osteoporosis",
        "long_term_corticosteroids",
        # inflammatory, neurological deficit
        "inflammatory_back_pain",
        "progressive_neurological_deficit",
        # myelopathy
        "myelopathic_gait",
        "clumsy_hands",
        "lhermitte_sign",
        "upper_motor_neurone_signs",
    }
    assert expected <= {item.id for item in RED_FLAGS.items}


def test_age_over_50_with_new_pain_stays_a_question_the_doctor_answers() -> None:
    item = RED_FLAGS.get("age_over_50_new_pain")
    assert item.category is RedFlagCategory.CANCER
    assert set(item.regions) == set(SpinalRegion)


def test_every_question_has_polish_text_and_a_declared_source() -> None:
    declared = {source.id for source in RED_FLAGS.sources}
    for item in RED_FLAGS.items:
        assert item.source in declared, item.id
        assert item.question.pl.startswith("Czy "), item.id
        assert item.question.pl.endswith("?") and item.question.en.endswith("?"), item.id
        assert item.question.pl != item.question.en, item.id
        assert item.text("pl_PL") == item.question.pl
        assert item.text("en-GB") == item.question.en


def test_every_source_carries_a_citation() -> None:
    for source in RED_FLAGS.sources:
        assert source.title and source.citation


def test_cauda_equina_questions_are_asked_for_the_lower_back_only() -> None:
    cauda = ids("lumbar", RedFlagCategory.CAUDA_EQUINA)

    assert {"saddle_anaesthesia", "bladder_dysfunction", "bowel_dysfunction"} <= cauda
    assert not ids("cervical", RedFlagCategory.CAUDA_EQUINA)
    assert not ids("thoracic", RedFlagCategory.CAUDA_EQUINA)


def test_myelopathy_questions_are_asked_for_the_neck_and_never_for_the_lower_back() -> None:
    myelopathy = ids("cervical", RedFlagCategory.MYELOPATHY)

    assert {"myelopathic_gait", "clumsy_hands", "lhermitte_sign"} <= myelopathy
    assert "upper_motor_neurone_signs" in myelopathy
    assert ids("thoracic", RedFlagCategory.MYELOPATHY)
    assert not ids("lumbar", RedFlagCategory.MYELOPATHY)


@pytest.mark.parametrize("region", REGIONS)
def test_every_region_is_asked_about_cancer_infection_fracture_and_neurological_deficit(
    region: str,
) -> None:
    asked = {item.category for item in items_for_region(region)}
    assert {
        RedFlagCategory.CANCER,
        RedFlagCategory.INFECTION,
        RedFlagCategory.FRACTURE,
        RedFlagCategory.NEUROLOGICAL_DEFICIT,
    } <= asked


def test_an_unknown_region_is_refused() -> None:
    with pytest.raises(ValueError):
        items_for_region("sacral")


# --- Scoring a screening ---------------------------------------------------------------


@pytest.mark.parametrize("region", REGIONS)
def test_all_no_answers_mean_no_red_flag(region: str) -> None:
    result = screen(all_no(region), region)

    assert result.any_positive is False
    assert result.positive == ()
    assert result.answers == all_no(region)
    assert result.version == RED_FLAGS.version


@pytest.mark.parametrize(
    ("region", "item_id"),
    [(region, item.id) for region in REGIONS for item in items_for_region(region)],
)
def test_a_single_yes_makes_the_screening_positive(region: str, item_id: str) -> None:
    answers = all_no(region) | {item_id: True}
    result = screen(answers, region)

    assert result.any_positive is True
    assert [item.id for item in result.positive] == [item_id]


def test_a_missing_answer_refuses_the_screening_and_lists_what_is_missing() -> None:
    answers = all_no("lumbar")
    del answers["saddle_anaesthesia"]
    del answers["night_pain"]

    with pytest.raises(IncompleteScreening) as refused:
        screen(answers, "lumbar")

    assert refused.value.missing == ["saddle_anaesthesia", "night_pain"]
    assert refused.value.unknown == []
    assert str(refused.value) == "Answer every red-flag question: 2 not answered."
    assert refused.value.message.msgid == "Answer every red-flag question: %(count)d not answered."
    assert isinstance(refused.value, ValueError)


def test_an_empty_screening_is_refused_listing_every_question() -> None:
    with pytest.raises(IncompleteScreening) as refused:
        screen({}, "cervical")

    assert refused.value.missing == [item.id for item in items_for_region("cervical")]


@pytest.mark.parametrize("not_an_answer", [None, "no", "yes", 0, 1])
def test_an_answer_that_is_not_a_plain_yes_or_no_counts_as_not_answered(
    not_an_answer: Any,
) -> None:
    answers: dict[str, Any] = all_no("lumbar") | {"bladder_dysfunction": not_an_answer}

    with pytest.raises(IncompleteScreening) as refused:
        screen(answers, "lumbar")

    assert refused.value.missing == ["bladder_dysfunction"]


def test_an_answer_to_a_question_that_does_not_exist_is_refused() -> None:
    answers = all_no("lumbar") | {"feels_fine": False}

    with pytest.raises(IncompleteScreening) as refused:
        screen(answers, "lumbar")

    assert refused.value.unknown == ["feels_fine"]
    assert refused.value.missing == []
    assert "feels_fine" in str(refused.value)


def test_a_neck_question_answered_on_a_lower_back_screening_is_refused_as_unknown() -> None:
    answers = all_no("lumbar") | {"clumsy_hands": True}

    with pytest.raises(IncompleteScreening) as refused:
        screen(answers, "lumbar")

    assert refused.value.unknown == ["clumsy_hands"]


def test_the_screening_keeps_the_answers_in_the_order_the_questions_are_asked() -> None:
    answers = dict(reversed(list(all_no("thoracic").items())))
    result = screen(answers, SpinalRegion.THORACIC)

    assert list(result.answers) == [item.id for item in items_for_region("thoracic")]


@given(st.sampled_from(REGIONS), st.data())
def test_the_screening_is_positive_exactly_when_some_answer_is_yes(
    region: str, data: st.DataObject
) -> None:
    questions = [item.id for item in items_for_region(region)]
    answers = {q: data.draw(st.booleans(), label=q) for q in questions}
    result = screen(answers, region)

    assert result.any_positive == any(answers.values())
    assert [item.id for item in result.positive] == [q for q in questions if answers[q]]
    assert result.answers == answers


# --- Refusing a broken list ------------------------------------------------------------


def packaged_data() -> dict[str, Any]:
    text = resources.files("regenspine.reference").joinpath("red_flags.yaml")
    return yaml.safe_load(text.read_text("utf-8"))


def item(data: dict[str, Any], item_id: str) -> dict[str, Any]:
    return next(i for i in data["items"] if i["id"] == item_id)


def test_the_packaged_file_passes_through_the_test_loader_unchanged() -> None:
    data = packaged_data()
    assert load_red_flags(yaml.safe_dump(data, allow_unicode=True)) == RED_FLAGS


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            lambda d: item(d, "saddle_anaesthesia").update(regions=["lumbar", "cervical"]),
            ["'saddle_anaesthesia'", "cauda_equina question cannot be asked for cervical"],
            id="cauda equina asked for the neck",
        ),
        pytest.param(
            lambda d: item(d, "clumsy_hands").update(regions=["lumbar"]),
            ["'clumsy_hands'", "myelopathy question cannot be asked for lumbar"],
            id="myelopathy asked for the lower back",
        ),
        pytest.param(
            lambda d: item(d, "night_pain").update(source="some_blog"),
            ["'night_pain'", "'some_blog' is not a declared source"],
            id="unknown source",
        ),
        pytest.param(
            lambda d: item(d, "night_pain").update(id="history_of_cancer"),
            ["id 'history_of_cancer' duplicates item"],
            id="duplicate id",
        ),
        pytest.param(
            lambda d: item(d, "night_pain")["question"].pop("pl"),
            ["'night_pain'", "question.pl"],
            id="no Polish text",
        ),
        pytest.param(
            lambda d: item(d, "night_pain").update(category="vascular"),
            ["'night_pain'", "category"],
            id="unknown category",
        ),
        pytest.param(
            lambda d: item(d, "night_pain").update(regions=[]),
            ["'night_pain'", "at least one of lumbar, cervical, thoracic"],
            id="no region",
        ),
        pytest.param(
            lambda d: item(d, "night_pain").update(urgency="high"),
            ["'night_pain'", "urgency", "Extra inputs are not permitted"],
            id="unexpected key",
        ),
    ],
)
def test_a_broken_red_flag_list_is_refused_naming_the_question(
    change: Callable[[dict[str, Any]], object], expected: list[str]
) -> None:
    data = packaged_data()
    change(data)
    with pytest.raises(RedFlagError) as refused:
        load_red_flags(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    for part in expected:
        assert part in str(refused.value)


def test_a_red_flag_list_that_is_not_yaml_is_refused() -> None:
    with pytest.raises(RedFlagError, match="not valid YAML"):
        load_red_flags("items: [unclosed")


def test_the_history_and_the_red_flag_answers_must_agree_on_cancer_and_immunosuppression():
    no = {"history_of_cancer": False, "immunosuppression": False}
    assert disagreements({"history_cancer": True}, no) == ["a history of cancer"]
    assert disagreements({"active_malignancy": True}, no) == ["cancer"]
    assert disagreements({"immunosuppression": False}, {"immunosuppression": True}) == [
        "immunosuppression"
    ]
    # A past cancer need not be active; a question not asked (or not answered) cannot disagree.
    assert disagreements({"active_malignancy": False}, {"history_of_cancer": True}) == []
    assert disagreements({"history_cancer": True}, {}) == []
    assert disagreements({"history_cancer": True, "active_malignancy": True}, no) == [
        "a history of cancer",
        "cancer",
    ]
