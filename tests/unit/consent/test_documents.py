"""Consent documents: the packaged text, the rules that refuse an understated consent,
rendering for one patient, and the hash that proves which text was shown."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from datetime import date
from importlib import resources
from typing import Any

import pytest
import yaml

from regenspine.consent import (
    REQUIRED_RISK_IDS,
    ConsentDocument,
    ConsentDocumentError,
    Frequency,
    UnknownConsentDocument,
    available_documents,
    current_document,
    load_document,
)
from regenspine.consent.documents import parse_document

TODAY = date(2026, 11, 24)

#: The hash of the published bmac-spine v1. If this test fails, the published text was
#: edited: restore it and put the new wording in bmac-spine-2.yaml instead, because signed
#: consents record this hash as proof of what the patient read.
BMAC_SPINE_1_HASH = "1defbbd321ab93083e9d53007f41437b5de84eecd2f5f15fc7a98bb28d2a99eb"


def packaged_yaml() -> str:
    return (
        resources.files("regenspine.reference.consent")
        .joinpath("bmac-spine-1.yaml")
        .read_text(encoding="utf-8")
    )


def packaged_data() -> dict[str, Any]:
    data = yaml.safe_load(packaged_yaml())
    assert isinstance(data, dict)
    return data


def document() -> ConsentDocument:
    return current_document("bmac-spine", today=TODAY)


def text_at(data: dict[str, Any], path: str) -> dict[str, str]:
    """The {en, pl} mapping at a path such as "risks[1].detail"."""
    node: Any = data
    for name, index in re.findall(r"([a-z_]+)(?:\[(\d+)\])?", path):
        node = node[name]
        if index:
            node = node[int(index)]
    assert set(node) == {"en", "pl"}
    return node


# --- The packaged document ------------------------------------------------------------


def test_the_packaged_documents_include_bmac_spine_version_1() -> None:
    assert ("bmac-spine", 1) in available_documents()


def test_the_current_document_lists_every_required_risk_in_both_languages() -> None:
    doc = document()
    for risk_id in REQUIRED_RISK_IDS:
        risk = doc.risk(risk_id)
        for language in ("en", "pl"):
            assert risk.title.get(language).strip()
            assert risk.detail.get(language).strip()
    for language in ("en", "pl"):
        rendered_ids = {r.id for r in doc.render(language, ["L4-L5"], "lumbar").risks}
        assert set(REQUIRED_RISK_IDS) <= rendered_ids


def test_every_text_of_the_current_document_exists_in_english_and_polish() -> None:
    doc = document()
    assert set(doc.languages) == {"en", "pl"}
    for path, text in doc.texts():
        assert text.en.strip(), path
        assert text.pl.strip(), path
        assert text.en != text.pl or path.startswith("region_names"), path


def test_the_risks_the_brief_names_are_all_listed_and_discitis_is_serious() -> None:
    doc = document()
    ids = {r.id for r in doc.risks}
    assert {
        "dural_puncture",
        "vasovagal_reaction",
        "herniation_progression",
        "unknown_long_term_risks",
    } <= ids
    infection = doc.risk("infection")
    assert infection.serious
    assert "discitis" in infection.detail.en
    assert doc.risk("pain_flare").frequency is Frequency.COMMON


def test_the_experimental_status_section_exists_and_says_experimental_in_both_languages() -> None:
    section = document().section("regulatory_status")
    assert "experimental" in section.body.en.lower()
    assert "eksperymentaln" in section.body.pl.lower()
    assert "not approved" in section.body.en
    assert "limited" in section.body.en


def test_the_declarations_include_understanding_that_the_treatment_may_not_help() -> None:
    declarations = {d.id: d.text for d in document().declarations}
    may_not_help = declarations["experimental_may_not_help"]
    assert "may not help" in may_not_help.en
    assert "experimental" in may_not_help.en
    assert "może ono nie przynieść mi korzyści" in may_not_help.pl
    assert "eksperymentalne" in may_not_help.pl


def test_the_published_version_1_text_has_not_been_edited() -> None:
    assert load_document("bmac-spine", 1).content_hash == BMAC_SPINE_1_HASH


# --- Rules that refuse an understated consent -----------------------------------------


def test_a_document_missing_the_infection_risk_is_refused_naming_it() -> None:
    data = packaged_data()
    data["risks"] = [r for r in data["risks"] if r["id"] != "infection"]
    with pytest.raises(ConsentDocumentError, match="required risk 'infection' is missing"):
        parse_document(yaml.safe_dump(data, allow_unicode=True), source="no-infection.yaml")


@pytest.mark.parametrize("risk_id", REQUIRED_RISK_IDS)
def test_a_document_missing_any_required_risk_is_refused_naming_it(risk_id: str) -> None:
    data = packaged_data()
    data["risks"] = [r for r in data["risks"] if r["id"] != risk_id]
    with pytest.raises(ConsentDocumentError) as refused:
        parse_document(yaml.safe_dump(data, allow_unicode=True))
    assert repr(risk_id) in str(refused.value)


def test_a_risk_without_its_polish_detail_is_refused_naming_the_risk_and_field() -> None:
    data = packaged_data()
    infection = next(r for r in data["risks"] if r["id"] == "infection")
    del infection["detail"]["pl"]
    with pytest.raises(ConsentDocumentError, match=r"risk #\d+ \('infection'\), field detail\.pl"):
        parse_document(yaml.safe_dump(data, allow_unicode=True))


def test_a_repeated_risk_id_is_refused() -> None:
    data = packaged_data()
    data["risks"].append(dict(data["risks"][0]))
    with pytest.raises(ConsentDocumentError, match="risk id 'bleeding' is used more than once"):
        parse_document(yaml.safe_dump(data, allow_unicode=True))


def test_a_document_without_the_regulatory_status_section_is_refused() -> None:
    data = packaged_data()
    data["sections"] = [s for s in data["sections"] if s["id"] != "regulatory_status"]
    with pytest.raises(ConsentDocumentError, match="required section 'regulatory_status'"):
        parse_document(yaml.safe_dump(data, allow_unicode=True))


def test_a_document_whose_declarations_do_not_name_the_levels_is_refused() -> None:
    data = packaged_data()
    data["declarations"] = [d for d in data["declarations"] if d["id"] != "consent_to_procedure"]
    with pytest.raises(ConsentDocumentError, match="no declaration names the disc levels"):
        parse_document(yaml.safe_dump(data, allow_unicode=True))


def test_an_unknown_field_in_a_risk_is_refused() -> None:
    data = packaged_data()
    data["risks"][0]["likelihood"] = "low"
    with pytest.raises(ConsentDocumentError, match=r"risk #1 \('bleeding'\), field likelihood"):
        parse_document(yaml.safe_dump(data, allow_unicode=True))


def test_an_unknown_placeholder_is_refused() -> None:
    data = packaged_data()
    body = text_at(data, "sections[0].body")
    body["en"] += " Level: {level}."
    body["pl"] += " Poziom: {level}."
    with pytest.raises(ConsentDocumentError, match=r"unknown placeholder\(s\) \{level\}"):
        parse_document(yaml.safe_dump(data, allow_unicode=True))


def test_a_placeholder_in_only_one_language_is_refused() -> None:
    data = packaged_data()
    text_at(data, "sections[1].body")["pl"] += " Poziomy: {levels}."
    with pytest.raises(ConsentDocumentError, match="use different placeholders"):
        parse_document(yaml.safe_dump(data, allow_unicode=True))


def test_an_unknown_frequency_word_is_refused() -> None:
    data = packaged_data()
    data["risks"][1]["frequency"] = "very rare"
    with pytest.raises(ConsentDocumentError, match=r"risk #2 \('infection'\), field frequency"):
        parse_document(yaml.safe_dump(data, allow_unicode=True))


# --- Loading ---------------------------------------------------------------------------


def test_an_unknown_version_raises_unknown_consent_document() -> None:
    with pytest.raises(UnknownConsentDocument, match=r"'bmac-spine' version 99") as missing:
        load_document("bmac-spine", 99)
    assert isinstance(missing.value, LookupError)
    assert (missing.value.code, missing.value.version) == ("bmac-spine", 99)


def test_an_unknown_code_raises_unknown_consent_document() -> None:
    with pytest.raises(UnknownConsentDocument, match="'../conditions'"):
        load_document("../conditions", 1)
    with pytest.raises(UnknownConsentDocument, match="'no-such-consent'"):
        current_document("no-such-consent", today=TODAY)


def test_no_document_is_current_before_its_effective_date() -> None:
    with pytest.raises(UnknownConsentDocument, match="in effect on 2026-11-23"):
        current_document("bmac-spine", today=date(2026, 11, 23))


def test_the_current_document_is_version_1_from_its_effective_date() -> None:
    doc = current_document("bmac-spine", today=TODAY)
    assert (doc.code, doc.version, doc.effective_from) == ("bmac-spine", 1, TODAY)


# --- Rendering -------------------------------------------------------------------------


def test_rendering_in_polish_fills_the_levels() -> None:
    rendered = document().render("pl", ["L4-L5", "L5-S1"], "lumbar")
    assert rendered.language == "pl"
    consent = {d.id: d.text for d in rendered.declarations}["consent_to_procedure"]
    assert "L4-L5, L5-S1" in consent
    assert "odcinek lędźwiowy" in consent
    procedure = rendered.section("procedure")
    assert procedure.title == "Na czym polega zabieg"
    assert any("L4-L5, L5-S1" in p for p in procedure.paragraphs)


@pytest.mark.parametrize("language", ["en", "pl"])
def test_no_placeholder_or_brace_is_left_after_rendering(language: str) -> None:
    rendered = document().render(language, ["C5-C6"], "cervical")
    texts = [rendered.title]
    texts += [t for title, paragraphs in rendered.sections for t in (title, *paragraphs)]
    texts += [t for r in rendered.risks for t in (r.title, r.detail, r.frequency_label)]
    texts += [d.text for d in rendered.declarations]
    for text in texts:
        assert "{" not in text and "}" not in text, text


def test_rendering_lists_levels_top_to_bottom_and_accepts_a_locale() -> None:
    rendered = document().render("en-GB", ["l5-s1", "L4-L5"], "lumbar")
    assert rendered.language == "en"
    assert rendered.levels == ("L4-L5", "L5-S1")


def test_rendering_keeps_every_section_risk_and_declaration_in_order() -> None:
    doc = document()
    rendered = doc.render("en", ["L4-L5"], "lumbar")
    assert rendered.section_ids == tuple(s.id for s in doc.sections)
    assert [title for title, _ in rendered.sections] == [s.title.en for s in doc.sections]
    assert [r.id for r in rendered.risks] == [r.id for r in doc.risks]
    assert [d.id for d in rendered.declarations] == [d.id for d in doc.declarations]
    assert (rendered.code, rendered.version, rendered.content_hash) == (
        "bmac-spine",
        1,
        doc.content_hash,
    )


def test_rendered_risks_carry_the_frequency_word_in_the_patients_language() -> None:
    risks = {r.id: r for r in document().render("pl", ["L4-L5"], "lumbar").risks}
    assert risks["infection"].frequency_label == "rzadko"
    assert risks["infection"].serious is True
    assert risks["pain_flare"].frequency_label == "często"


def test_a_rendered_consent_cannot_be_changed() -> None:
    rendered = document().render("en", ["L4-L5"], "lumbar")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rendered.title = "something else"  # type: ignore[misc]


@pytest.mark.parametrize("language", ["de", "", "english"])
def test_an_unknown_language_is_refused(language: str) -> None:
    with pytest.raises(ValueError, match="not available in"):
        document().render(language, ["L4-L5"], "lumbar")


@pytest.mark.parametrize(
    ("levels", "region", "message"),
    [
        ([], "lumbar", "at least one disc level"),
        (["C5-C6"], "lumbar", "not a disc level of the lumbar spine"),
        (["L4-L5", "L4-L5"], "lumbar", "named more than once"),
        ("L4-L5", "lumbar", "not the string"),
        (["L4-L5"], "sacral", "unknown spinal region"),
    ],
)
def test_levels_that_cannot_be_consented_to_are_refused(
    levels: Any, region: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        document().render("en", levels, region)


# --- The content hash ----------------------------------------------------------------


def test_content_hash_is_the_sha256_of_the_canonical_json() -> None:
    doc = document()
    canonical = json.dumps(
        doc.model_dump(mode="json"), sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    assert doc.content_hash == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", doc.content_hash)


def test_content_hash_is_stable_when_nothing_changes() -> None:
    first = parse_document(packaged_yaml()).content_hash
    assert parse_document(packaged_yaml()).content_hash == first
    assert document().content_hash == first
    # The same words wrapped differently in the file are the same text.
    rewrapped = yaml.safe_dump(packaged_data(), allow_unicode=True, width=30)
    assert parse_document(rewrapped).content_hash == first


@pytest.mark.parametrize("language", ["en", "pl"])
@pytest.mark.parametrize("path", [path for path, _ in document().texts()])
def test_content_hash_changes_when_any_word_changes(path: str, language: str) -> None:
    original = document().content_hash
    data = document().model_dump(mode="json")
    text = text_at(data, path)
    words = text[language].split(" ")
    words[-1] = "changed" + words[-1]
    text[language] = " ".join(words)
    assert ConsentDocument.model_validate(data).content_hash != original


@pytest.mark.parametrize(
    ("field", "value"),
    [("frequency", "uncommon"), ("serious", False)],
)
def test_content_hash_changes_when_a_risk_is_downgraded(field: str, value: Any) -> None:
    original = document().content_hash
    data = document().model_dump(mode="json")
    infection = next(r for r in data["risks"] if r["id"] == "infection")
    infection[field] = value
    assert ConsentDocument.model_validate(data).content_hash != original
