"""The condition catalogue: the packaged data, its validation and the pure helpers."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from regenspine.catalog.conditions import (
    CatalogueError,
    CodingStatus,
    Condition,
    ConditionCatalogue,
    SpinalRegion,
    get_catalogue,
    levels_for_region,
    load_catalogue,
    verhoeff_check_digit,
    verhoeff_is_valid,
)

FOURTEEN_CONDITIONS = {
    "annular_fissure",
    "spondylosis",
    "low_back_pain",
    "osteophytes",
    "disc_herniation",
    "spinal_stenosis",
    "degenerative_disc_disease",
    "disc_extrusion",
    "disc_protrusion",
    "herniated_nucleus_pulposus",
    "neck_pain",
    "radiculitis",
    "sciatica",
    "radiculopathy",
}

OFFICIAL_SOURCES = {"who_icd10_2019", "cms_icd10cm_fy2025", "snomed_ct_international"}


def packaged_data() -> dict[str, Any]:
    """A fresh, mutable copy of the packaged catalogue as plain YAML data."""
    text = resources.files("regenspine.reference").joinpath("conditions.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def entry(data: dict[str, Any], code: str) -> dict[str, Any]:
    return next(c for c in data["conditions"] if c["code"] == code)


def load(data: dict[str, Any]) -> ConditionCatalogue:
    return load_catalogue(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))


def refusal(data: dict[str, Any]) -> str:
    with pytest.raises(CatalogueError) as caught:
        load(data)
    return str(caught.value)


def icd10(condition: Condition) -> list[str]:
    return [c.code for c in condition.icd10]


def icd10_cm(condition: Condition) -> list[str]:
    return [c.code for c in condition.icd10_cm]


# --- The packaged catalogue ------------------------------------------------------------


def test_catalogue_lists_the_fourteen_conditions_the_clinic_treats() -> None:
    catalogue = get_catalogue()
    assert len(catalogue.conditions) == 14
    assert set(catalogue.codes) == FOURTEEN_CONDITIONS


def test_catalogue_carries_its_version_and_publication_date() -> None:
    catalogue = get_catalogue()
    assert catalogue.version == "2026.11.1"
    assert catalogue.published.isoformat() == "2026-11-24"


def test_packaged_catalogue_is_loaded_once_and_shared() -> None:
    assert get_catalogue() is get_catalogue()


def test_loading_without_text_reads_the_packaged_file() -> None:
    assert load_catalogue() == get_catalogue()


def test_every_code_cites_a_declared_source() -> None:
    catalogue = get_catalogue()
    declared = {s.id for s in catalogue.sources}
    assert declared >= OFFICIAL_SOURCES
    for condition in catalogue.conditions:
        for path, coding in condition.codings():
            assert coding.source in declared, f"{condition.code} {path}"


def test_codes_from_memory_point_to_the_official_release_to_check() -> None:
    for condition in get_catalogue().conditions:
        for path, coding in condition.codings():
            if coding.status is CodingStatus.MEMORY:
                assert coding.source in OFFICIAL_SOURCES, f"{condition.code} {path}"


def test_every_unconfirmed_code_says_why() -> None:
    for condition in get_catalogue().conditions:
        for path, coding in condition.codings():
            if coding.status is CodingStatus.UNCONFIRMED:
                assert coding.note, f"{condition.code} {path}"


def test_low_back_pain_uses_m54_5_in_who_icd10_and_m54_50_in_icd10_cm() -> None:
    low_back_pain = get_catalogue().get("low_back_pain")
    assert icd10(low_back_pain) == ["M54.5"]
    assert icd10_cm(low_back_pain)[0] == "M54.50"
    assert {"M54.51", "M54.59"} <= set(icd10_cm(low_back_pain))
    assert "FY2022" in low_back_pain.coding_note
    assert low_back_pain.snomed_ct is not None
    assert low_back_pain.snomed_ct.code == "279039007"


def test_retired_m54_5_is_never_offered_as_an_icd10_cm_code() -> None:
    for condition in get_catalogue().conditions:
        assert "M54.5" not in icd10_cm(condition), condition.code


def test_disc_caused_radiculopathy_is_coded_as_a_disc_disorder() -> None:
    catalogue = get_catalogue()
    herniation = catalogue.get("disc_herniation")
    assert {"M51.1", "M50.1"} <= set(icd10(herniation))
    assert {"M51.16", "M51.17", "M50.121", "M50.122", "M50.123"} <= set(icd10_cm(herniation))
    for code in ("radiculopathy", "radiculitis"):
        note = catalogue.get(code).coding_note
        assert "M51.1" in note and "M50.1" in note and "Excludes1" in note


def test_herniation_family_shares_the_disc_displacement_codes() -> None:
    catalogue = get_catalogue()
    herniation = catalogue.get("disc_herniation")
    for code in ("disc_extrusion", "disc_protrusion", "herniated_nucleus_pulposus"):
        assert catalogue.get(code).icd10 == herniation.icd10
        assert catalogue.get(code).icd10_cm == herniation.icd10_cm
    assert {"M51.26", "M51.27", "M50.221", "M50.222", "M50.223"} <= set(icd10_cm(herniation))


def test_annular_fissure_has_no_specific_who_code_but_has_the_icd10_cm_m51_a_codes() -> None:
    fissure = get_catalogue().get("annular_fissure")
    assert icd10(fissure)[0] == "M51.8"
    assert icd10_cm(fissure) == ["M51.A0", "M51.A1", "M51.A2", "M51.A3", "M51.A4", "M51.A5"]
    assert "no specific code" in fissure.coding_note
    assert fissure.snomed_ct is None


def test_degenerative_disc_disease_uses_the_fy2025_pain_split() -> None:
    ddd = get_catalogue().get("degenerative_disc_disease")
    assert {"M51.360", "M51.361", "M51.362", "M51.369"} <= set(icd10_cm(ddd))
    assert {"M51.370", "M51.371", "M51.372", "M51.379"} <= set(icd10_cm(ddd))
    assert "M51.36" not in icd10_cm(ddd) and "M51.37" not in icd10_cm(ddd)


def test_statuses_stay_as_honest_as_the_facts_file() -> None:
    catalogue = get_catalogue()
    by_code = {c.code: c for c in catalogue.get("annular_fissure").icd10_cm}
    assert by_code["M51.A3"].status is CodingStatus.CONFIRMED
    assert by_code["M51.A3"].source == "med_report"
    assert by_code["M51.A0"].status is CodingStatus.MEMORY
    radiculopathy = catalogue.get("radiculopathy").snomed_ct
    assert radiculopathy is not None and radiculopathy.status is CodingStatus.UNCONFIRMED
    assert all(c.status is CodingStatus.MEMORY for c in catalogue.get("sciatica").icd10)


def test_sides_apply_to_the_nerve_root_conditions() -> None:
    catalogue = get_catalogue()
    for code in ("sciatica", "radiculopathy", "radiculitis"):
        assert catalogue.get(code).side_applies, code
    for code in ("low_back_pain", "neck_pain", "degenerative_disc_disease"):
        assert not catalogue.get(code).side_applies, code


def test_levels_apply_to_disc_conditions_but_not_to_regional_pain() -> None:
    catalogue = get_catalogue()
    assert catalogue.get("degenerative_disc_disease").level_applies
    assert catalogue.get("disc_herniation").level_applies
    assert not catalogue.get("low_back_pain").level_applies
    assert not catalogue.get("neck_pain").level_applies


def test_every_condition_applies_to_known_regions() -> None:
    for condition in get_catalogue().conditions:
        assert condition.regions
        assert set(condition.regions) <= set(SpinalRegion)
    assert get_catalogue().get("neck_pain").regions == (SpinalRegion.CERVICAL,)
    assert get_catalogue().get("sciatica").regions == (SpinalRegion.LUMBAR,)


def test_no_icd_code_uses_an_x_placeholder() -> None:
    for condition in get_catalogue().conditions:
        for code in icd10(condition) + icd10_cm(condition):
            assert "x" not in code.lower(), f"{condition.code} {code}"


def test_get_an_unknown_condition_raises_key_error() -> None:
    with pytest.raises(KeyError, match="no_such_condition"):
        get_catalogue().get("no_such_condition")


def test_catalogue_cannot_be_changed_after_loading() -> None:
    condition = get_catalogue().get("sciatica")
    with pytest.raises(ValidationError):
        condition.side_applies = False  # type: ignore[misc]


# --- SNOMED CT and the Verhoeff check --------------------------------------------------


def test_snomed_ids_pass_the_verhoeff_check() -> None:
    ids = [c.snomed_ct.code for c in get_catalogue().conditions if c.snomed_ct is not None]
    assert ids
    for sctid in ids:
        assert verhoeff_is_valid(sctid), sctid


def test_verhoeff_matches_published_examples() -> None:
    assert verhoeff_check_digit("236") == "3"
    assert verhoeff_check_digit("12345") == "1"
    assert verhoeff_check_digit("142857") == "0"
    # Well-known SCTIDs: SNOMED CT root concept, Clinical finding, Disease.
    for sctid in ("138875005", "404684003", "64572001"):
        assert verhoeff_is_valid(sctid)


def test_verhoeff_refuses_what_is_not_a_digit_string() -> None:
    assert not verhoeff_is_valid("")
    assert not verhoeff_is_valid("7")
    assert not verhoeff_is_valid("7358900a")
    with pytest.raises(ValueError):
        verhoeff_check_digit("12a")


def valid_ids() -> st.SearchStrategy[str]:
    catalogue_ids = [c.snomed_ct.code for c in get_catalogue().conditions if c.snomed_ct]
    generated = st.text(alphabet="0123456789", min_size=1, max_size=17).map(
        lambda body: body + verhoeff_check_digit(body)
    )
    return st.one_of(st.sampled_from(catalogue_ids), generated)


@given(data=st.data())
def test_verhoeff_rejects_a_single_digit_typo(data: st.DataObject) -> None:
    sctid = data.draw(valid_ids(), label="valid id")
    assert verhoeff_is_valid(sctid)
    position = data.draw(st.integers(min_value=0, max_value=len(sctid) - 1), label="position")
    typo = data.draw(st.sampled_from([d for d in "0123456789" if d != sctid[position]]))
    assert not verhoeff_is_valid(sctid[:position] + typo + sctid[position + 1 :])


def test_snomed_ids_the_facts_file_got_wrong_are_not_used() -> None:
    catalogue = get_catalogue()
    # Spondylosis 75320002, cervical spondylosis 415068001, lumbar DDD 57703009 and
    # lumbosacral radiculopathy 57310009 fail the check digit.
    for wrong in ("75320002", "415068001", "57703009", "57310009"):
        assert not verhoeff_is_valid(wrong)
    assert catalogue.get("spondylosis").snomed_ct is None
    assert "Verhoeff" in catalogue.get("spondylosis").coding_note
    # 23056005 is Sciatica, not "lumbosacral radiculitis" as one seed file claims.
    assert catalogue.get("radiculitis").snomed_ct is None
    sciatica = catalogue.get("sciatica").snomed_ct
    assert sciatica is not None and sciatica.code == "23056005"


# --- Refusals --------------------------------------------------------------------------


def test_catalogue_with_unknown_source_is_refused_with_a_clear_message() -> None:
    data = packaged_data()
    entry(data, "sciatica")["icd10"][0]["source"] = "somebodys_blog"
    message = refusal(data)
    assert "condition #13 ('sciatica')" in message
    assert "icd10[0].source" in message
    assert "'somebodys_blog' is not a declared source" in message


def test_duplicate_condition_code_is_refused() -> None:
    data = packaged_data()
    entry(data, "neck_pain")["code"] = "sciatica"
    message = refusal(data)
    assert "condition #13: code 'sciatica' duplicates condition #11" in message


def test_catalogue_without_exactly_fourteen_conditions_is_refused() -> None:
    data = packaged_data()
    data["conditions"] = [c for c in data["conditions"] if c["code"] != "osteophytes"]
    assert "exactly 14 conditions, found 13" in refusal(data)


def test_duplicate_source_id_is_refused() -> None:
    data = packaged_data()
    data["sources"].append(dict(data["sources"][0]))
    assert "'who_icd10_2019' is declared more than once" in refusal(data)


def test_icd_code_with_an_x_placeholder_is_refused() -> None:
    data = packaged_data()
    entry(data, "spondylosis")["icd10_cm"][0]["code"] = "M47.81x"
    message = refusal(data)
    assert "condition #2 ('spondylosis'), field icd10_cm" in message
    assert "'M47.81x'" in message


def test_icd10_cm_only_code_in_the_who_list_is_refused() -> None:
    data = packaged_data()
    entry(data, "low_back_pain")["icd10"][0]["code"] = "M51.A3"
    message = refusal(data)
    assert "('low_back_pain'), field icd10" in message
    assert "not a valid WHO ICD-10 code" in message


def test_snomed_id_failing_the_verhoeff_check_is_refused() -> None:
    data = packaged_data()
    entry(data, "sciatica")["snomed_ct"]["code"] = "23056006"
    message = refusal(data)
    assert "('sciatica'), field snomed_ct" in message
    assert "fails the Verhoeff check digit" in message


def test_snomed_id_written_as_a_number_is_refused() -> None:
    data = packaged_data()
    entry(data, "sciatica")["snomed_ct"]["code"] = 23056005
    assert "field snomed_ct.code" in refusal(data)


def test_region_outside_lumbar_cervical_thoracic_is_refused() -> None:
    data = packaged_data()
    entry(data, "sciatica")["regions"] = ["sacral"]
    assert "('sciatica'), field regions[0]" in refusal(data)


def test_condition_without_regions_is_refused() -> None:
    data = packaged_data()
    entry(data, "sciatica")["regions"] = []
    assert "regions must name at least one" in refusal(data)


def test_code_for_a_site_outside_the_condition_regions_is_refused() -> None:
    data = packaged_data()
    entry(data, "neck_pain")["icd10_cm"].append(
        {
            "code": "M51.26",
            "display": "Other intervertebral disc displacement, lumbar region",
            "region": "lumbar",
            "source": "cms_icd10cm_fy2025",
            "status": "memory",
        }
    )
    assert "M51.26 is for the lumbar site" in refusal(data)


def test_unknown_status_and_unknown_fields_are_refused() -> None:
    data = packaged_data()
    entry(data, "sciatica")["icd10"][0]["status"] = "probably"
    entry(data, "sciatica")["synonyms"] = ["ischias"]
    message = refusal(data)
    assert "field icd10[0].status" in message
    assert "field synonyms" in message


def test_text_that_is_not_yaml_or_not_a_mapping_is_refused() -> None:
    with pytest.raises(CatalogueError, match="not valid YAML"):
        load_catalogue("conditions: [unclosed")
    with pytest.raises(CatalogueError, match="must be a YAML mapping"):
        load_catalogue("- just\n- a list\n")


def test_catalogue_error_is_a_value_error() -> None:
    assert issubclass(CatalogueError, ValueError)


# --- Levels and labels -----------------------------------------------------------------


def test_levels_for_lumbar_region_run_from_l1_l2_to_l5_s1() -> None:
    assert levels_for_region(SpinalRegion.LUMBAR) == ["L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"]


def test_levels_for_cervical_region_run_from_c2_c3_to_c7_t1() -> None:
    levels = levels_for_region("cervical")
    assert levels == ["C2-C3", "C3-C4", "C4-C5", "C5-C6", "C6-C7", "C7-T1"]


def test_levels_for_thoracic_region_run_from_t1_t2_to_t12_l1() -> None:
    levels = levels_for_region(SpinalRegion.THORACIC)
    assert len(levels) == 12
    assert levels[0] == "T1-T2" and levels[-1] == "T12-L1"


def test_levels_for_an_unknown_region_are_refused() -> None:
    with pytest.raises(ValueError):
        levels_for_region("sacral")


def test_polish_names_exist_for_every_condition() -> None:
    for condition in get_catalogue().conditions:
        assert condition.name.pl.strip(), condition.code
        assert condition.name.pl != condition.name.en, condition.code
        assert condition.label("pl") == condition.name.pl
    catalogue = get_catalogue()
    assert catalogue.get("disc_herniation").label("pl") == "Przepuklina krążka międzykręgowego"
    assert catalogue.get("spinal_stenosis").label("pl") == "Zwężenie kanału kręgowego"
    assert catalogue.get("sciatica").label("pl") == "Rwa kulszowa"
    assert catalogue.get("neck_pain").label("pl") == "Ból szyi"


def test_label_gives_the_english_name_and_accepts_locales() -> None:
    sciatica = get_catalogue().get("sciatica")
    assert sciatica.label("en") == "Sciatica"
    assert sciatica.label("pl_PL") == "Rwa kulszowa"
    assert sciatica.label("en-GB") == "Sciatica"


def test_label_in_an_unsupported_language_is_refused() -> None:
    with pytest.raises(ValueError, match="'de'"):
        get_catalogue().get("sciatica").label("de")


# --- Purity ----------------------------------------------------------------------------


def test_catalogue_module_imports_neither_fastapi_nor_sqlalchemy() -> None:
    code = (
        "import sys, regenspine.catalog.conditions as m; m.get_catalogue(); "
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ('fastapi', 'sqlalchemy')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
