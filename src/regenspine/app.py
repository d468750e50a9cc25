"""The ASGI application: JSON API, HTML pages and health check over the same services."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from regenspine import __version__
from regenspine.config import Settings, get_settings
from regenspine.db import database_is_reachable, session_factory
from regenspine.web import problems
from regenspine.web.access_log import keep_query_strings_out_of_the_access_log
from regenspine.web.middleware import RequestLimits, SecurityHeaders

STATIC_DIR = Path(__file__).resolve().parent / "web" / "static"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    from regenspine.catalog.conditions import get_catalogue
    from regenspine.consent.documents import current_document
    from regenspine.eligibility.red_flags import get_red_flags
    from regenspine.eligibility.rules import current_ruleset

    # Reference data is validated at start-up: a broken file stops the app, not a consultation.
    get_catalogue()
    get_red_flags()
    current_ruleset()
    current_document()

    app = FastAPI(
        title="RegenSpine",
        version=__version__,
        description=(
            "Clinic API for autologous bone-marrow cell therapy of spinal pain. Authenticate "
            "with a session cookie (browser) or `Authorization: Bearer <token>` (integrations). "
            "Errors are RFC 9457 problem+json with a reference id."
        ),
        docs_url="/api/docs" if settings.api_docs_published else None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.api_docs_published else None,
    )
    app.state.settings = settings
    app.state.session_factory = session_factory(settings.database_url)
    app.add_middleware(RequestLimits)  # inside SecurityHeaders: its refusals get the headers too
    app.add_middleware(SecurityHeaders)
    problems.install(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    from regenspine.audit import api as audit_api
    from regenspine.audit import pages as audit_pages
    from regenspine.auth import api as auth_api
    from regenspine.auth import pages as auth_pages
    from regenspine.catalog import api as catalog_api
    from regenspine.eligibility import api as eligibility_api
    from regenspine.eligibility import pages as eligibility_pages
    from regenspine.episodes import api as episodes_api
    from regenspine.episodes import pages as episodes_pages
    from regenspine.patients import api as patients_api
    from regenspine.patients import pages as patients_pages
    from regenspine.privacy import api as privacy_api

    for module in (
        auth_api,
        patients_api,
        episodes_api,
        eligibility_api,
        privacy_api,
        audit_api,
        catalog_api,
    ):
        app.include_router(module.router, prefix="/api/v1")
    for module in (auth_pages, patients_pages, episodes_pages, eligibility_pages, audit_pages):
        app.include_router(module.router, include_in_schema=False)

    @app.get("/livez", tags=["health"])
    async def livez() -> JSONResponse:
        """Liveness: the process answers. No database and no sign-in, so a supervisor can tell
        a hung process from a database outage (that is what /healthz reports)."""
        return JSONResponse({"status": "ok"})

    @app.get("/healthz", tags=["health"], responses={503: {"description": "Database unreachable"}})
    def healthz(request: Request) -> JSONResponse:
        """Readiness: the database answers. The version is told in development only: in
        production it would tell a stranger which known weaknesses to try (ASVS V13.4.6)."""
        ok = database_is_reachable(request.app.state.session_factory)
        body: dict[str, object] = {"status": "ok" if ok else "unavailable", "database": ok}
        if not settings.is_production:
            body["version"] = __version__
        return JSONResponse(body, status_code=200 if ok else 503)

    logging.getLogger("regenspine").setLevel(logging.INFO)
    keep_query_strings_out_of_the_access_log()
    return app


def serve_app() -> FastAPI:
    """The application as each `regenspine serve` worker runs it: built, then the process's
    garbage collector settled for a long-running server (web/collector.py)."""
    from regenspine.web.collector import settle_for_serving

    app = create_app()
    settle_for_serving()
    return app
