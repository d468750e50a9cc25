"""Jinja2 rendering in the user's language; every domain's templates/ folder is on the path."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from regenspine.auth.actor import ANONYMOUS
from regenspine.auth.fields import WITHHELD, clinical_text
from regenspine.auth.permissions import ROLE_LABELS, Permission, Role
from regenspine.config import get_settings
from regenspine.errors import Message
from regenspine.i18n import (
    LANGUAGE_COOKIE,
    LANGUAGE_NAMES,
    format_date,
    format_datetime,
    gettext_for,
    pick_language,
    translations,
)
from regenspine.web.cookies import cookie_name

PACKAGE_DIR = Path(__file__).resolve().parent.parent
DOMAINS_WITH_PAGES = (
    "web",
    "auth",
    "patients",
    "episodes",
    "eligibility",
    "audit",
    "catalog",
    "reports",
)


@lru_cache(maxsize=1)
def environment() -> Environment:
    loader = ChoiceLoader(
        [
            FileSystemLoader(str(PACKAGE_DIR / domain / "templates"))
            for domain in DOMAINS_WITH_PAGES
            if (PACKAGE_DIR / domain / "templates").is_dir()
        ]
    )
    env = Environment(
        loader=loader,
        autoescape=select_autoescape(["html", "xml"], default=True),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # Real translations are passed per request; these only make the i18n tags compile.
    env.install_null_translations(newstyle=True)  # type: ignore[attr-defined]
    return env


def request_language(request: Request) -> str:
    # The actor is an immutable snapshot: safe to read even after the transaction rolled back.
    actor = getattr(request.state, "actor", None)
    if actor is not None and actor.user_id is not None:
        return actor.language
    return pick_language(
        request.cookies.get(cookie_name(LANGUAGE_COOKIE)),
        request.headers.get("accept-language"),
        get_settings().default_language,
    )


def render(
    request: Request, template: str, context: dict[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    language = request_language(request)
    tr = translations(language)
    gettext = tr.gettext
    identity = getattr(request.state, "identity", None)
    actor = identity.actor if identity is not None else None

    def _(msgid: str, **params: Any) -> str:
        text = gettext(msgid)
        return text % params if params else text

    def _n(singular: str, plural: str, count: int, **params: Any) -> str:
        return tr.ngettext(singular, plural, count) % ({"count": count} | params)

    def msg(message: Message | None) -> str:
        return message.render(gettext) if message is not None else ""

    def ctext(entity: str, field: str, value: str | None) -> str | Markup:
        """Clinical free text, or a visible note that it is withheld from this role."""
        shown = clinical_text(actor or ANONYMOUS, entity, field, value)
        if shown is not None or not value:
            return shown or ""
        return Markup('<span class="muted withheld">%s</span>') % gettext(WITHHELD)

    ctx = {
        "request": request,
        "_": _,
        "gettext": _,
        "ngettext": _n,
        "msg": msg,
        "lang": language,
        "languages": LANGUAGE_NAMES,
        "identity": identity,
        "actor": actor,
        "user": identity.user if identity is not None else None,
        "csrf_token": identity.csrf_token if identity is not None else "",
        "can": (lambda p: actor is not None and actor.can(Permission(p))),
        "ctext": ctext,
        "role_label": lambda role: _(ROLE_LABELS[Role(role)]) if role else "",
        "fdate": lambda d: format_date(d, language),
        "fdatetime": lambda d: format_datetime(d, language),
        "production": get_settings().is_production,
    }
    ctx.update(context or {})
    html = environment().get_template(template).render(ctx)
    return HTMLResponse(html, status_code=status)


def translate(request: Request, message: Message) -> str:
    return message.render(gettext_for(request_language(request)))
