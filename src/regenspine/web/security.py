"""Who is asking: cookie sessions for the browser, bearer tokens for integrations, CSRF checks."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from regenspine.auth import service as auth
from regenspine.auth.actor import Actor
from regenspine.auth.models import User, WebSession
from regenspine.auth.permissions import Permission
from regenspine.errors import N_, DomainError, Message, NotAuthenticated, PermissionDenied
from regenspine.web.boundary import client_ip, run_statements, transaction
from regenspine.web.cookies import ANON_CSRF_COOKIE, SESSION_COOKIE, cookie_name
from regenspine.web.return_to import sign_in_address

CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Forms a visitor may send before (or while) holding a session: they also accept the
# double-submit token of the anonymous CSRF cookie.
ANONYMOUS_FORMS = frozenset({"/login", "/login/mfa", "/language"})

Db = Annotated[Session, Depends(transaction, scope="function")]


class CsrfRejected(DomainError):
    status = 403
    title = "Form expired"


class CrossSiteRefused(DomainError):
    status = 403
    title = "Not allowed"


class LoginRequired(Exception):
    """A page needs a signed-in user; the handler redirects to the sign-in page."""

    def __init__(self, to: str = "/login") -> None:
        self.to = to


@dataclass
class Identity:
    actor: Actor | None
    user: User | None = None
    web_session: WebSession | None = None
    session_token: str | None = None
    anon_csrf: str | None = None
    # Plain copies: error pages render after a rollback, when ORM rows can no longer be read.
    session_csrf: str | None = None
    mfa_passed: bool = True
    # The browser sent a session that has ended (timed out, signed out elsewhere, ended by an
    # administrator): its answer deletes the cookie and clears the site's data (middleware).
    session_ended: bool = False

    @property
    def csrf_token(self) -> str:
        return self.session_csrf or self.anon_csrf or ""

    @property
    def fully_signed_in(self) -> bool:
        return self.actor is not None and self.mfa_passed


async def _submitted_csrf(request: Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


def _signed_in(db: Session, token: str | None, ip: str) -> Identity:
    identity = Identity(actor=None)
    if token:
        active = auth.resolve_session(db, token, ip)
        if active is None:
            # Record the timeout now: the request that follows will be refused and rolled back.
            db.commit()
            identity.session_ended = auth.ended_for_good(db, token)
        else:
            identity.user = active.user
            identity.web_session = active.web_session
            identity.session_token = token
            identity.session_csrf = active.web_session.csrf_token
            identity.mfa_passed = active.web_session.mfa_passed
            identity.actor = auth.actor_for(active.user, ip)
    return identity


async def identify(request: Request, db: Db) -> Identity:
    """Resolves the caller once per request and checks CSRF on every state-changing request.

    The database work of a signed-in browser runs in a worker thread: its first statement may
    wait for a lock that another request holds until it commits, and that commit needs the
    event loop this coroutine would otherwise block (SQLite's "database is locked" after the
    busy timeout). An API token is resolved wherever the request's statements run (see
    run_statements).
    """
    ip = client_ip(request)
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        actor = await run_statements(db, auth.resolve_api_token, db, authorization[7:].strip(), ip)
        if actor is None:
            raise NotAuthenticated(Message(N_("The API token is not valid, expired or revoked.")))
        identity = Identity(actor=actor)
        request.state.actor = actor
        request.state.identity = identity
        return identity  # bearer tokens are not sent by browsers on their own: no CSRF risk

    identity = await run_in_threadpool(
        _signed_in, db, request.cookies.get(cookie_name(SESSION_COOKIE)), ip
    )
    anon_cookie = request.cookies.get(cookie_name(ANON_CSRF_COOKIE))
    identity.anon_csrf = anon_cookie or secrets.token_urlsafe(24)
    request.state.identity = identity
    if identity.actor is not None:
        request.state.actor = identity.actor

    if request.method not in SAFE_METHODS:
        submitted = await _submitted_csrf(request)
        expected = [identity.csrf_token]
        if request.url.path in ANONYMOUS_FORMS and anon_cookie:
            expected.append(anon_cookie)
        if not submitted or not any(hmac.compare_digest(submitted, e) for e in expected if e):
            auth.security_log.warning(
                "Form refused, CSRF token %s: %s %s user=%s ip=%s",
                "wrong" if submitted else "missing",
                request.method,
                request.url.path,
                identity.actor.username if identity.actor is not None else "-",
                ip,
            )
            raise CsrfRejected(
                Message(
                    N_(
                        "This form has expired or was sent from another site. Reload the page "
                        "and try again; nothing was saved."
                    )
                )
            )
    return identity


Ident = Annotated[Identity, Depends(identify)]


async def posted_form(request: Request) -> FormData:
    """The submitted form, read on the event loop so that pages can be plain functions.

    A page that uses the database must not be a coroutine: a lock wait inside it (PostgreSQL
    row and advisory locks have no timeout) would block the event loop that the holder of the
    lock needs to reach its commit, and the worker would hang for good.
    """
    return await request.form()


PostedForm = Annotated[FormData, Depends(posted_form)]


# What a browser says of where a request comes from (Fetch Metadata): "same-origin" for the
# clinic's own pages, "none" for an address typed or bookmarked. Absent from older browsers
# and from programs, which send no cookies on another site's behalf.
OWN_SITE = frozenset({"same-origin", "none"})


async def from_the_clinic(request: Request) -> None:
    """For a costly or counted read (an export, a check of the whole log): a browser must
    send it from the clinic's own pages (ASVS 5.0 V3.5.1, V3.5.3). Otherwise another site
    could make a signed-in auditor's browser start one with a link or an image, using up
    their exports or writing an export they never made into the log. Runs before the route:
    a refusal counts nothing and records nothing. A bearer token is never sent by a browser on
    its own, so a program with one is not asked."""
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return
    site = request.headers.get("sec-fetch-site")
    if site is None or site in OWN_SITE:
        return
    auth.security_log.warning(
        "Request from another site refused: %s %s sec-fetch-site=%s ip=%s",
        request.method,
        request.url.path,
        site[:40],
        client_ip(request),
    )
    raise CrossSiteRefused(
        Message(
            N_(
                "This can only be started from the clinic's own pages. Open it from the "
                "clinic's menu; nothing was done or counted."
            )
        )
    )


FromTheClinic = Depends(from_the_clinic)


def _gate(identity: Identity) -> tuple[str, Message] | None:
    """Where a half-signed-in user must go first, if anywhere, and why: the second step, then
    a password of their own after a one-time one, then enrolment where their role needs it."""
    if identity.web_session is not None and not identity.web_session.mfa_passed:
        return "/login/mfa", Message(N_("Finish two-step sign-in first."))
    user = identity.user
    if user is not None and user.password_must_change:
        return "/account", Message(
            N_("You signed in with a one-time password: choose your own password first.")
        )
    if user is not None and auth.mfa_required(user) and not user.mfa_enabled:
        return "/account/mfa", Message(
            N_("Your role must turn on two-step sign-in before using the clinic.")
        )
    return None


async def page_actor(request: Request, identity: Ident) -> Actor:
    if identity.actor is None:
        raise LoginRequired(sign_in_address("/login", request.url.path))
    gate = _gate(identity)
    if gate and not request.url.path.startswith(gate[0]):
        raise LoginRequired(gate[0])
    return identity.actor


async def account_actor(identity: Ident) -> Actor:
    """For the account pages a user must reach to finish MFA enrolment. They are for a person
    signed in in a browser: an API token, of whatever scope, reaches none of them (it could
    otherwise read a new two-step secret or manage its owner's tokens)."""
    if identity.actor is None or identity.web_session is None:
        raise LoginRequired("/login")
    if identity.web_session is not None and not identity.web_session.mfa_passed:
        raise LoginRequired("/login/mfa")
    return identity.actor


async def api_actor(identity: Ident) -> Actor:
    if identity.actor is None:
        raise NotAuthenticated(Message(N_("Sign in or send an API token to use the API.")))
    if identity.web_session is not None and not identity.web_session.mfa_passed:
        raise NotAuthenticated(Message(N_("Finish two-step sign-in first.")))
    gate = _gate(identity) if identity.user is not None else None
    if gate:
        raise PermissionDenied(gate[1])
    return identity.actor


async def account_api_actor(identity: Ident) -> Actor:
    """Signed in (MFA passed if enrolled), but perhaps still owing MFA enrolment."""
    if identity.actor is None:
        raise NotAuthenticated(Message(N_("Sign in or send an API token to use the API.")))
    if identity.web_session is not None and not identity.web_session.mfa_passed:
        raise NotAuthenticated(Message(N_("Finish two-step sign-in first.")))
    return identity.actor


def requires(permission: Permission) -> Any:
    """Route-level guard declared next to the route; the service checks the same table again."""

    async def check(actor: Annotated[Actor, Depends(api_actor)]) -> None:
        actor.require(permission)

    return Depends(check)


def page_requires(permission: Permission) -> Any:
    async def check(actor: Annotated[Actor, Depends(page_actor)]) -> None:
        actor.require(permission)

    return Depends(check)


PageActor = Annotated[Actor, Depends(page_actor)]
AccountApiActor = Annotated[Actor, Depends(account_api_actor)]
AccountActor = Annotated[Actor, Depends(account_actor)]
ApiActor = Annotated[Actor, Depends(api_actor)]
