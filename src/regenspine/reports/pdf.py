"""HTML templates to PDF with WeasyPrint; nothing is fetched from outside the package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from regenspine.i18n import format_date, format_datetime, translations
from regenspine.web.templating import environment

STYLESHEET = Path(__file__).resolve().parent / "templates" / "reports" / "print.css"


def _refuse_external(url: str) -> dict[str, Any]:
    raise ValueError(f"printable documents may not load external resources ({url[:60]})")


def render_pdf(template: str, context: dict[str, Any], language: str) -> bytes:
    """Renders a print template in the given language and returns the PDF bytes."""
    from weasyprint import CSS, HTML

    tr = translations(language)

    def _(msgid: str, **params: Any) -> str:
        text = tr.gettext(msgid)
        return text % params if params else text

    html = (
        environment()
        .get_template(template)
        .render(
            {
                "_": _,
                "gettext": _,
                "lang": language,
                "fdate": lambda d: format_date(d, language),
                "fdatetime": lambda d: format_datetime(d, language),
            }
            | context
        )
    )
    document = HTML(string=html, base_url=None, url_fetcher=_refuse_external)
    return document.write_pdf(stylesheets=[CSS(filename=str(STYLESHEET))])
