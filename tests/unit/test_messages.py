"""Refusal messages: their parts are shown in the reader's language, catalogue or data."""

from __future__ import annotations

from datetime import date

from regenspine.catalog.conditions import get_catalogue
from regenspine.consultations.rules import validate_consultation
from regenspine.errors import N_, InvalidInput, Listing, Localised, Message
from regenspine.i18n import translations

POLISH = translations("pl").gettext


def test_a_name_from_reference_data_follows_the_language_of_the_message_around_it():
    name = Localised({"en": "Disc protrusion", "pl": "Protruzja krążka"})
    message = Message(N_("%(condition)s needs the spinal level(s)."), condition=name)
    assert message.render() == "Disc protrusion needs the spinal level(s)."
    assert message.render(POLISH).startswith("Protruzja krążka")


def test_a_listing_translates_each_of_its_parts():
    regions = Listing([Message(N_("lumbar")), Message(N_("cervical"))])
    assert regions.render() == "lumbar, cervical"
    assert regions.render(POLISH) == "lędźwiowy, szyjny"


def test_a_diagnosis_refused_on_a_polish_page_names_the_condition_in_polish():
    """A side chosen for a condition that takes none was refused, on the Polish page, with
    the condition's English name."""
    catalogue = get_catalogue()
    sideless = next(c for c in catalogue.conditions if not c.side_applies and "lumbar" in c.regions)
    raw = {"diagnoses": [{"condition": sideless.code, "levels": ["L4-L5"], "side": "left"}]}
    try:
        validate_consultation(raw, "lumbar", catalogue, date(2026, 12, 6))
    except InvalidInput as exc:
        refusal = exc.field_errors["diagnoses.0"]
    else:  # pragma: no cover - the test's premise
        raise AssertionError("a side for a condition without one was accepted")
    assert refusal.render().startswith(sideless.label("en"))
    assert refusal.render(POLISH).startswith(sideless.label("pl"))
