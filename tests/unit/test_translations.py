"""The Polish catalog covers every message in the sources, and the committed .pot is current.

When this fails after adding or changing a string, run
    .venv/bin/python scripts/update_translations.py
translate the empty entries in src/regenspine/locale/pl/LC_MESSAGES/messages.po, and re-run.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "update_translations.py"
PO_FILE = ROOT / "src" / "regenspine" / "locale" / "pl" / "LC_MESSAGES" / "messages.po"
POT_FILE = ROOT / "src" / "regenspine" / "locale" / "messages.pot"
REFRESH = "run `.venv/bin/python scripts/update_translations.py` and translate the new entries"

# A %-format placeholder as Message.render and the templates' _() apply it: %(name)s, %(n)d, %%.
PLACEHOLDER = re.compile(
    r"%(?:\((?P<name>[^)]*)\))?[#0 +-]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?(?P<conv>.)"
)


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("update_translations", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("update_translations", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return _load_script()


@pytest.fixture(scope="module")
def extracted(script: ModuleType) -> Catalog:
    return script.extract_messages()


@pytest.fixture(scope="module")
def polish() -> Catalog:
    with PO_FILE.open("rb") as fh:
        return read_po(fh, locale="pl", abort_invalid=True)


def _id(message) -> str:  # type: ignore[no-untyped-def]
    return message.id[0] if isinstance(message.id, (list, tuple)) else message.id


def _strings(value) -> list[str]:  # type: ignore[no-untyped-def]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def placeholders(text: str) -> list[str]:
    """The %(...) placeholders of a text, sorted, e.g. ['%(max)d', '%(min)d']; '%%' is not one."""
    found = []
    for match in PLACEHOLDER.finditer(text):
        if match.group("conv") == "%":
            continue
        name, conv = match.group("name"), match.group("conv")
        found.append(f"%({name}){conv}" if name is not None else f"%{conv}")
    return sorted(found)


def test_extraction_finds_python_and_template_messages(extracted: Catalog) -> None:
    ids = {_id(m) for m in extracted if m.id}
    files = {loc[0] for m in extracted if m.id for loc in m.locations}
    # One message from each source kind, including a template under a _partials/ folder.
    assert "Patients" in ids  # templates
    assert "Administrator" in ids  # N_() in Python
    assert any(f.endswith(".py") for f in files)
    assert any("/_partials/" in f for f in files), "templates in _partials/ were not scanned"
    assert len(ids) > 100


def test_every_extracted_message_has_a_polish_translation(
    extracted: Catalog, polish: Catalog
) -> None:
    missing = []
    for message in extracted:
        if not message.id:
            continue
        translated = polish.get(message.id, context=message.context)
        if translated is None or translated.fuzzy or not all(_strings(translated.string)):
            missing.append(_id(message))
    assert not missing, f"{len(missing)} message(s) without a Polish translation ({REFRESH}):\n" + (
        "\n".join(f"  {m!r}" for m in missing)
    )


def test_translations_keep_the_placeholders(polish: Catalog) -> None:
    wrong = []
    for message in polish:
        if not message.id:
            continue
        expected = placeholders(_id(message))
        for string in _strings(message.string):
            if string and placeholders(string) != expected:
                wrong.append(f"  {_id(message)!r}: {placeholders(string)} != {expected}")
    assert not wrong, "Placeholders differ from the msgid:\n" + "\n".join(wrong)


def test_translations_format_with_the_messages_parameters(polish: Catalog) -> None:
    """A stray '%' in a translation would make Message.render / _() raise at run time."""
    broken = []
    for message in polish:
        if not message.id:
            continue
        names = {p[2:-2] for p in placeholders(_id(message))}
        if not names:
            continue
        params = {name: 1 for name in names}
        for string in _strings(message.string):
            try:
                string % params
            except (KeyError, TypeError, ValueError) as exc:
                broken.append(f"  {string!r}: {exc!r}")
    assert not broken, "Translations that do not format:\n" + "\n".join(broken)


def test_runtime_catalog_translates() -> None:
    from regenspine.i18n import translations

    translations.cache_clear()
    try:
        pl = translations("pl")
        assert pl.gettext("Patients") == "Pacjenci"
        assert pl.gettext("Sign in") == "Zaloguj się"
        assert translations("en").gettext("Patients") == "Patients"
    finally:
        translations.cache_clear()


def test_po_file_parses_cleanly_without_fuzzy_entries(polish: Catalog) -> None:
    assert polish.locale is not None and str(polish.locale) == "pl"
    assert polish.num_plurals == 3
    assert not polish.fuzzy, "the header of the .po is marked fuzzy"
    fuzzy = [_id(m) for m in polish if m.id and m.fuzzy]
    assert not fuzzy, f"Fuzzy entries in {PO_FILE.name}: {fuzzy}"
    problems = [f"  {_id(m)!r}: {errors}" for m, errors in polish.check()]
    assert not problems, "Babel's catalog checks failed:\n" + "\n".join(problems)


def test_committed_pot_is_up_to_date(extracted: Catalog) -> None:
    with POT_FILE.open("rb") as fh:
        committed = read_po(fh, abort_invalid=True)
    in_sources = {_id(m) for m in extracted if m.id}
    in_pot = {_id(m) for m in committed if m.id}
    assert in_pot == in_sources, (
        f"messages.pot is stale ({REFRESH}).\n"
        f"  missing from the .pot: {sorted(in_sources - in_pot)}\n"
        f"  no longer in the sources: {sorted(in_pot - in_sources)}"
    )


def test_po_has_no_messages_the_sources_dropped(extracted: Catalog, polish: Catalog) -> None:
    in_sources = {_id(m) for m in extracted if m.id}
    leftover = sorted({_id(m) for m in polish if m.id} - in_sources)
    assert not leftover, f"Stale entries in {PO_FILE.name} ({REFRESH}): {leftover}"
