"""Errors become RFC 9457 problem+json for the API and a friendly page for people; never a trace."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from regenspine.config import get_settings
from regenspine.errors import N_, DomainError, InvalidInput, Message
from regenspine.web import openapi
from regenspine.web.middleware import plain_page, set_security_headers
from regenspine.web.security import LoginRequired
from regenspine.web.templating import render, translate

log = logging.getLogger("regenspine.errors")
PROBLEM = openapi.PROBLEM_MEDIA_TYPE


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return (
        path.startswith(("/api/", "/healthz"))
        or "application/json" in request.headers.get("accept", "")
        and "text/html" not in request.headers.get("accept", "")
    )


def problem(
    request: Request,
    status: int,
    title: str,
    detail: str,
    reference: str | None = None,
    **extra: Any,
) -> JSONResponse:
    reference = reference or uuid.uuid4().hex[:12]
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "reference": reference,
    } | extra
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def install(app: FastAPI) -> None:
    openapi.install(app)  # /openapi.json documents the problem answers of the handlers below

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> Response:
        if _wants_json(request):
            extra: dict[str, Any] = {}
            if isinstance(exc, InvalidInput):
                extra["errors"] = {k: v.render() for k, v in exc.field_errors.items()}
            candidates = getattr(exc, "candidates", None)
            if candidates:
                extra["candidates"] = [
                    {"id": c.id, "mrn": c.mrn, "name": c.name, "reason": c.reason}
                    for c in candidates
                ]
            return problem(request, exc.status, exc.title, exc.message.render(), **extra)
        return render(
            request,
            "error.html",
            {"status": exc.status, "message": translate(request, exc.message)},
            status=exc.status,
        )

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": exc.to})
        return RedirectResponse(exc.to, status_code=303)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        errors = {
            ".".join(str(p) for p in e.get("loc", ()) if p != "body"): e.get("msg", "invalid")
            for e in exc.errors()
        }
        if not _wants_json(request):
            # A page's address or form that the browser did not build (an id of letters, a
            # page number 0): the person gets a page in their language, not JSON.
            message = Message(
                N_(
                    "This address or form is not one the clinic's pages make. Go back and use "
                    "the links and buttons on the page."
                )
            )
            return render(
                request,
                "error.html",
                {"status": 422, "message": translate(request, message)},
                status=422,
            )
        return problem(
            request,
            422,
            "Some of the information is not valid",
            "The request does not match the expected format.",
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        response: Response
        if _wants_json(request):
            response = problem(request, exc.status_code, str(exc.detail), str(exc.detail))
        else:
            message = Message(
                N_("This page does not exist.")
                if exc.status_code == 404
                else N_("This request could not be handled.")
            )
            response = render(
                request,
                "error.html",
                {"status": exc.status_code, "message": translate(request, message)},
                status=exc.status_code,
            )
        # Keep what the framework says with the status, e.g. `Allow` on 405 (RFC 9110 15.5.6).
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        reference = uuid.uuid4().hex[:12]
        log.error("unhandled error reference=%s path=%s", reference, request.url.path, exc_info=exc)
        response: Response
        if _wants_json(request):
            response = problem(
                request,
                500,
                "Internal error",
                "Something went wrong on our side. Nothing was saved. Quote the reference when "
                "reporting this.",
                reference=reference,
            )
        else:
            response = _unexpected_error_page(request, reference)
        # Starlette answers an unexpected error from outside the app's middleware.
        set_security_headers(response.headers, get_settings().is_production)
        return response


UNEXPECTED = N_(
    "Something went wrong on our side. Nothing was saved. Quote the reference %(reference)s "
    "when reporting this."
)


def _unexpected_error_page(request: Request, reference: str) -> Response:
    """The error page with the reference, in the person's language; if even the page cannot be
    drawn, the same words in plain HTML."""
    message = Message(UNEXPECTED, reference=reference)
    try:
        return render(
            request, "error.html", {"status": 500, "message": translate(request, message)}, 500
        )
    except Exception:
        log.exception("could not draw the error page for reference=%s", reference)
        return HTMLResponse(plain_page(message.render()), status_code=500)
