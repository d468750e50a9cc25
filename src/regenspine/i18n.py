"""Polish and English: gettext catalogs read from the package's .po files, dates via Babel."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import date, datetime
from functools import lru_cache
from importlib import resources

from babel.dates import format_date as babel_format_date
from babel.dates import format_datetime as babel_format_datetime
from babel.dates import get_timezone
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LANGUAGES = ("en", "pl")
LANGUAGE_NAMES = {"en": "English", "pl": "Polski"}
# The visitor's chosen language, remembered by the browser for pages shown before sign-in.
LANGUAGE_COOKIE = "rs_lang"
DEFAULT_TIMEZONE = "Europe/Warsaw"


@lru_cache(maxsize=4)
def translations(language: str) -> NullTranslations:
    """English is the source language; other languages are compiled in memory from their .po."""
    if language not in LANGUAGES or language == "en":
        return NullTranslations()
    po_file = resources.files("regenspine") / "locale" / language / "LC_MESSAGES" / "messages.po"
    with po_file.open("rb") as fh:
        catalog = read_po(fh, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer)


def gettext_for(language: str) -> Callable[[str], str]:
    return translations(language).gettext


def format_date(value: date | None, language: str) -> str:
    if value is None:
        return ""
    return babel_format_date(value, format="medium", locale=language)


def format_datetime(value: datetime | None, language: str) -> str:
    if value is None:
        return ""
    return babel_format_datetime(
        value, format="medium", tzinfo=get_timezone(DEFAULT_TIMEZONE), locale=language
    )


def pick_language(requested: str | None, accept_language: str | None, default: str) -> str:
    if requested in LANGUAGES:
        return requested
    for part in (accept_language or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return default
