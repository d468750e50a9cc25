"""Security headers on every response, and the anonymous CSRF cookie for the sign-in form."""

from __future__ import annotations

from http.cookies import SimpleCookie

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from regenspine.config import get_settings

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)


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
                identity = scope.get("state", {}).get("identity")
                cookies = SimpleCookie()
                cookies.load(_cookie_header(scope))
                anon = getattr(identity, "anon_csrf", None)
                if anon and "rs_csrf" not in cookies:
                    flags = "Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if production else "")
                    headers.append("set-cookie", f"rs_csrf={anon}; {flags}")
            await send(message)

        await self.app(scope, receive, send_wrapper)


def _cookie_header(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            return value.decode("latin-1")
    return ""
