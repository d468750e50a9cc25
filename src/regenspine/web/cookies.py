"""The clinic's cookies: their names and the attributes each is set with."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.responses import Response

from regenspine.config import get_settings

SESSION_COOKIE = "rs_session"
ANON_CSRF_COOKIE = "rs_csrf"
HOST_ONLY_PREFIX = "__Host-"


def cookie_name(name: str) -> str:
    """The name a cookie is set and read under (ASVS V3.3.3). In production every name carries
    the `__Host-` prefix: a browser then keeps the cookie only if this host set it over HTTPS
    with Path=/ and no Domain, so neither a page on a sibling subdomain nor one sent over plain
    HTTP on the clinic's network can plant a session or CSRF cookie of its own choosing
    (session fixation by cookie tossing). Development serves plain HTTP on localhost, where a
    browser would refuse a prefixed cookie."""
    return HOST_ONLY_PREFIX + name if get_settings().is_production else name


def cookie_kwargs() -> dict[str, object]:
    """The attributes of every cookie the clinic sets or deletes (ASVS V3.3.1): out of reach of
    scripts, not sent on cross-site requests, and in production only over HTTPS."""
    settings = get_settings()
    return {
        "httponly": True,
        "samesite": "lax",
        "secure": settings.is_production,
        "path": "/",
    }


def cookie_header(name: str, value: str, *, delete: bool = False) -> str:
    """A Set-Cookie value with the attributes every cookie of the clinic has (cookie_kwargs),
    for an answer whose headers are written directly; `delete` makes it the deletion."""
    response = Response()
    if delete:
        response.delete_cookie(name, **cookie_kwargs())  # type: ignore[arg-type]
    else:
        response.set_cookie(name, value, **cookie_kwargs())  # type: ignore[arg-type]
    return response.headers["set-cookie"]


def forget_session(headers: MutableHeaders) -> None:
    """A browser whose session has ended (signed out, timed out, or ended by an administrator)
    deletes its session cookie and whatever of the signed-in pages it kept in its cache or
    storage (ASVS V7.4.1, V14.3.1). Not "cookies": that would also forget the language chosen
    for the sign-in page."""
    name = cookie_name(SESSION_COOKIE)
    if "clear-site-data" in headers or any(
        value.startswith(name + "=") for value in headers.getlist("set-cookie")
    ):
        return  # already done, or this answer starts a new session (a fresh sign-in)
    headers.append("set-cookie", cookie_header(name, "", delete=True))
    headers["Clear-Site-Data"] = '"cache", "storage"'
