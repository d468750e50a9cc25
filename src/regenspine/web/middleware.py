"""Security headers on every response, and the anonymous CSRF cookie for the sign-in form."""

from __future__ import annotations

import html
import json
import uuid
from http.cookies import SimpleCookie
from urllib.parse import unquote_plus

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from regenspine.config import get_settings
from regenspine.i18n import LANGUAGE_COOKIE
from regenspine.text import UNSEARCHABLE
from regenspine.web.cookies import ANON_CSRF_COOKIE, cookie_header, cookie_name, forget_session

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)


def set_security_headers(headers: MutableHeaders, production: bool) -> None:
    """The headers every answer carries. Starlette sends the answer to an unexpected error from
    outside the app's middleware, so the error handler sets them itself with this too."""
    headers["Content-Security-Policy"] = CSP
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "same-origin"
    headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if production:
        headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    if "cache-control" not in headers:
        # Patient data must not linger in shared or back-button caches.
        headers["Cache-Control"] = "no-store"


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        production = get_settings().is_production

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                set_security_headers(headers, production)
                identity = scope.get("state", {}).get("identity")
                cookies = SimpleCookie()
                cookies.load(_cookie_header(scope))
                anon = getattr(identity, "anon_csrf", None)
                name = cookie_name(ANON_CSRF_COOKIE)
                if anon and name not in cookies:
                    headers.append("set-cookie", cookie_header(name, anon))
                if getattr(identity, "session_ended", False):
                    forget_session(headers)
            await send(message)

        await self.app(scope, receive, send_wrapper)


def _cookie_header(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            return value.decode("latin-1")
    return ""


# The largest thing anyone sends is a consent scan (at most 5 MB, checked with a clear message
# by the consent service); a form carrying one stays well under 6 MiB. Nothing else comes
# near 1 MiB. Larger requests are refused before they are read, so an upload can neither fill
# the disk with temporary files nor tie up a worker.
MAX_FORM_UPLOAD_BYTES = 6 * 1024 * 1024
MAX_OTHER_BODY_BYTES = 1024 * 1024
TOO_LARGE_TEXT = (
    "The request is too large. A scanned document may be at most 5 MB; "
    "scan it at a lower resolution or as a PDF and try again.",
    "Żądanie jest za duże. Skan dokumentu może mieć najwyżej 5 MB; "
    "zeskanuj go w niższej rozdzielczości lub jako PDF i spróbuj ponownie.",
)
UNSTORABLE_QUERY_TEXT = (
    "The address contains an invisible control character (NUL) or broken text. Type the search "
    "or filter again.",
    "Adres zawiera niewidoczny znak sterujący (NUL) lub uszkodzony tekst. Wpisz wyszukiwanie "
    "lub filtr ponownie.",
)


def body_limit(scope: Scope) -> int:
    content_type = _header(scope, b"content-type").lower()
    if content_type.startswith("multipart/form-data"):
        return MAX_FORM_UPLOAD_BYTES
    return MAX_OTHER_BODY_BYTES


class RequestLimits:
    """Refuses a request body over its limit with 413, whether the size is declared
    (Content-Length) or only discovered while the body streams in (chunked), and a query
    string carrying NUL or bytes that are not UTF-8 (text.py::UNSEARCHABLE), with 400, before
    any search or filter sees it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"")
        decoded = unquote_plus(query.decode("latin-1"), errors="surrogateescape") if query else ""
        if UNSEARCHABLE.search(decoded):
            await _refuse(scope, send, 400, UNSTORABLE_QUERY_TEXT)
            return
        limit = body_limit(scope)
        declared = _header(scope, b"content-length")
        number = declared.isascii() and declared.isdigit()
        if declared and (not number or int(declared) > limit):
            await _refuse(scope, send, 413 if number else 400)
            return
        received = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    await _refuse(scope, send, 413)
                    # The application sees the client go away and abandons the request
                    # (its transaction rolls back); nothing it sends afterwards goes out.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


def plain_page(text: str) -> str:
    """A page of one paragraph, for answers given where the templates are not at hand."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>RegenSpine</title>'
        f"</head><body><p>{html.escape(text)}</p></body></html>"
    )


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1").strip())
    return ""


async def _refuse(
    scope: Scope, send: Send, status: int, texts: tuple[str, str] | None = None
) -> None:
    cookies: SimpleCookie = SimpleCookie()
    cookies.load(_cookie_header(scope))
    language = cookies.get(cookie_name(LANGUAGE_COOKIE))
    polish = language is not None and language.value == "pl"
    detail = TOO_LARGE_TEXT[1] if polish else TOO_LARGE_TEXT[0]
    if texts is not None:
        detail = texts[1] if polish else texts[0]
    elif status == 400:
        detail = "The request's Content-Length header is not a number."
    if str(scope.get("path", "")).startswith("/api/"):
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Request too large" if status == 413 else "Bad request",
                "status": status,
                "detail": detail,
                "instance": str(scope.get("path", "")),
                "reference": uuid.uuid4().hex[:12],
            }
        ).encode()
        content_type = b"application/problem+json"
    else:
        body = plain_page(detail).encode()
        content_type = b"text/html; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
