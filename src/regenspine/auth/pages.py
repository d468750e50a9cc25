"""Sign-in, two-step verification, my account and staff administration pages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from regenspine.auth import service
from regenspine.auth.models import User
from regenspine.auth.permissions import ROLE_LABELS, ROLE_PERMISSIONS, Role
from regenspine.db import utcnow
from regenspine.errors import DomainError, InvalidInput, PermissionDenied
from regenspine.i18n import LANGUAGE_COOKIE, LANGUAGES
from regenspine.text import plain_number
from regenspine.web.boundary import client_ip, refusable, request_actor
from regenspine.web.cookies import SESSION_COOKIE, cookie_kwargs, cookie_name, forget_session
from regenspine.web.openapi import RowId
from regenspine.web.return_to import landing, safe_return_path, sign_in_address, start_page
from regenspine.web.security import (
    AccountActor,
    Db,
    Ident,
    PageActor,
)
from regenspine.web.templating import render

ONE_YEAR = 365 * 24 * 3600  # seconds: how long the chosen language is remembered

router = APIRouter()
FormStr = Annotated[str, Form()]


def _set_session_cookie(response: Response, token: str) -> None:
    response.set_cookie(cookie_name(SESSION_COOKIE), token, **cookie_kwargs())  # type: ignore[arg-type]


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, identity: Ident, next: str | None = None) -> Response:
    if identity.actor is not None and identity.fully_signed_in:
        return RedirectResponse(landing(next, identity.actor.can), status_code=303)
    return render(request, "auth/login.html", {"next": safe_return_path(next)})


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    db: Db,
    identity: Ident,
    username: FormStr = "",
    password: FormStr = "",
    next: FormStr = "/patients",
) -> Response:
    actor = request_actor(request)
    try:
        with refusable(db, actor):
            result = service.sign_in(
                db,
                username,
                password,
                client_ip(request),
                request.headers.get("user-agent", ""),
                identity.session_token,
            )
    except DomainError as exc:
        return render(
            request,
            "auth/login.html",
            {"error": exc.message, "username": username[:150], "next": safe_return_path(next)},
            status=401,
        )
    can = service.actor_for(result.user, client_ip(request)).can
    target = sign_in_address("/login/mfa", next) if result.needs_mfa else landing(next, can)
    response = RedirectResponse(target, status_code=303)
    _set_session_cookie(response, result.session_token)
    response.set_cookie(
        cookie_name(LANGUAGE_COOKIE),
        result.user.language,
        max_age=ONE_YEAR,
        **cookie_kwargs(),  # type: ignore[arg-type]
    )
    return response


@router.get("/", include_in_schema=False)
def home(identity: Ident) -> RedirectResponse:
    """The start page of whoever is signed in; the sign-in page for anyone else."""
    if identity.actor is None or not identity.fully_signed_in:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse(start_page(identity.actor.can), status_code=303)


@router.get("/login/mfa", response_class=HTMLResponse)
def mfa_form(request: Request, identity: Ident, next: str | None = None) -> Response:
    if identity.web_session is None:
        return RedirectResponse("/login", status_code=303)
    return render(request, "auth/mfa.html", {"next": safe_return_path(next)})


@router.post("/login/mfa", response_class=HTMLResponse)
def mfa_verify(
    request: Request, db: Db, identity: Ident, code: FormStr = "", next: FormStr = "/patients"
) -> Response:
    if identity.session_token is None:
        return RedirectResponse("/login", status_code=303)
    try:
        with refusable(db, request_actor(request)):
            token, web_session = service.complete_mfa(
                db,
                identity.session_token,
                code,
                client_ip(request),
                request.headers.get("user-agent", ""),
            )
    except DomainError as exc:
        return render(
            request,
            "auth/mfa.html",
            {"error": exc.message, "next": safe_return_path(next)},
            status=401,
        )
    user = db.get(User, web_session.user_id)
    assert user is not None
    response = RedirectResponse(
        landing(next, service.actor_for(user, client_ip(request)).can), status_code=303
    )
    _set_session_cookie(response, token)
    return response


@router.post("/logout")
def logout(db: Db, identity: Ident) -> Response:
    if identity.actor is not None and identity.session_token:
        service.sign_out(db, identity.actor, identity.session_token)
    response = RedirectResponse("/login", status_code=303)
    forget_session(response.headers)
    return response


@router.post("/language")
def choose_language(
    request: Request, db: Db, identity: Ident, language: FormStr = "en", next: FormStr = "/"
) -> Response:
    language = language if language in LANGUAGES else "en"
    if identity.actor is not None and identity.user is not None:
        service.set_language(db, identity.actor, language)
    response = RedirectResponse(safe_return_path(next), status_code=303)
    response.set_cookie(
        cookie_name(LANGUAGE_COOKIE),
        language,
        max_age=ONE_YEAR,
        **cookie_kwargs(),  # type: ignore[arg-type]
    )
    return response


# --- my account ---------------------------------------------------------------------------


def _account(request: Request, db: Db, actor: AccountActor, **extra: object) -> Response:
    status = int(extra.pop("status", 200))  # type: ignore[call-overload]
    tokens = service.list_api_tokens(db, actor)
    scopes = sorted(p.value for p in ROLE_PERMISSIONS[actor.role]) if actor.role else []
    browsers = service.list_open_sessions(
        db, actor, current_token=request.state.identity.session_token
    )
    return render(
        request,
        "auth/account.html",
        {
            "tokens": tokens,
            "scopes": scopes,
            "browsers": browsers,
            "now": utcnow(),
            "token_form_key": service.new_form_key(),
            "no_token_because": service.why_no_api_token(request.state.identity.user),
        }
        | extra,
        status=status,
    )


@router.get("/account", response_class=HTMLResponse)
def account(request: Request, db: Db, actor: AccountActor) -> Response:
    return _account(request, db, actor)


@router.post("/account/password", response_class=HTMLResponse)
def change_password(
    request: Request,
    db: Db,
    actor: AccountActor,
    identity: Ident,
    current_password: FormStr = "",
    new_password: FormStr = "",
) -> Response:
    try:
        with refusable(db, actor):
            service.change_password(
                db, actor, current_password, new_password, keep_session=identity.session_token
            )
    except InvalidInput as exc:
        return _account(request, db, actor, password_errors=exc.field_errors, status=422)
    return _account(request, db, actor, password_changed=True)


@router.post("/account/sessions", response_class=HTMLResponse)
def sign_out_other_browsers(
    request: Request,
    db: Db,
    actor: AccountActor,
    identity: Ident,
    session: FormStr = "",
    password: FormStr = "",
) -> Response:
    """Signs out one other browser or all of them, after the password is given again."""
    try:
        with refusable(db, actor):
            ended = service.sign_out_other_sessions(
                db, actor, password, session, current_token=identity.session_token
            )
    except InvalidInput as exc:
        return _account(request, db, actor, session_errors=exc.field_errors, status=422)
    return _account(request, db, actor, browsers_signed_out=ended)


@router.post("/account/password-strength", response_class=HTMLResponse)
def password_strength(
    request: Request, actor: AccountActor, new_password: FormStr = ""
) -> Response:
    strength = service.password_strength(new_password, actor.username, actor.full_name)
    return render(
        request,
        "auth/_partials/strength.html",
        {"strength": strength, "empty": not new_password},
    )


@router.get("/account/mfa", response_class=HTMLResponse)
def mfa_enrol(request: Request, db: Db, actor: AccountActor) -> Response:
    if identity_user_has_mfa(request):
        return RedirectResponse("/account", status_code=303)
    enrolment = service.begin_mfa_enrolment(db, actor)
    return render(request, "auth/mfa_enrol.html", {"enrolment": enrolment})


def identity_user_has_mfa(request: Request) -> bool:
    identity = request.state.identity
    return bool(identity.user is not None and identity.user.mfa_enabled)


@router.post("/account/mfa", response_class=HTMLResponse)
def mfa_confirm(
    request: Request, db: Db, actor: AccountActor, code: FormStr = "", password: FormStr = ""
) -> Response:
    try:
        with refusable(db, actor):
            codes = service.confirm_mfa_enrolment(
                db,
                actor,
                code,
                password=password,
                keep_session=request.state.identity.session_token,
            )
    except InvalidInput as exc:
        enrolment = service.begin_mfa_enrolment(db, actor)
        return render(
            request,
            "auth/mfa_enrol.html",
            {"enrolment": enrolment, "errors": exc.field_errors},
            status=422,
        )
    return render(request, "auth/mfa_codes.html", {"codes": codes})


@router.post("/account/tokens", response_class=HTMLResponse)
def create_token(
    request: Request,
    db: Db,
    actor: AccountActor,
    identity: Ident,
    name: FormStr = "",
    days_valid: FormStr = "",
    form_key: FormStr = "",
) -> Response:
    """Shows the new token's secret in the answer to the form, the only time it is shown; the
    form's one-time key keeps a reload of that answer from making a second token."""
    scopes = [s for s in _form_list(request, "scopes")]
    days = int(days_valid) if plain_number(days_valid.strip(), 4) else 0
    try:
        with refusable(db, actor):
            token, secret = service.create_api_token(
                db, actor, name, scopes, days, form_key, via_session=identity.web_session
            )
    except InvalidInput as exc:
        return _account(request, db, actor, token_errors=exc.field_errors, status=422)
    except service.FormAlreadySent as exc:
        return _account(request, db, actor, token_errors={"form": exc.message}, status=409)
    except PermissionDenied as exc:
        return _account(request, db, actor, token_errors={"form": exc.message}, status=403)
    return _account(request, db, actor, new_token=secret)


def _form_list(request: Request, key: str) -> list[str]:
    form = request._form  # already parsed by the CSRF check
    return [v for v in form.getlist(key) if isinstance(v, str)] if form is not None else []


@router.post("/account/tokens/{token_id}/revoke")
def revoke_token(token_id: RowId, db: Db, actor: AccountActor) -> Response:
    service.revoke_api_token(db, actor, token_id)
    return RedirectResponse("/account", status_code=303)


# --- staff administration -----------------------------------------------------------------


def _users_page(request: Request, db: Db, actor: PageActor, **extra: object) -> Response:
    status = int(extra.pop("status", 200))  # type: ignore[call-overload]
    users = service.list_users(db, actor)
    return render(
        request,
        "auth/users.html",
        {
            "users": users,
            "roles": list(Role),
            "role_labels": ROLE_LABELS,
            "one_time_hours": service.ONE_TIME_PASSWORD_HOURS,
        }
        | extra,
        status=status,
    )


@router.get("/admin/users", response_class=HTMLResponse)
def users(request: Request, db: Db, actor: PageActor) -> Response:
    return _users_page(request, db, actor)


@router.post("/admin/users", response_class=HTMLResponse)
def create_user(
    request: Request,
    db: Db,
    actor: PageActor,
    username: FormStr = "",
    full_name: FormStr = "",
    role: FormStr = "",
    password: FormStr = "",
    email: FormStr = "",
    language: FormStr = "pl",
) -> Response:
    form = {
        "username": username,
        "full_name": full_name,
        "role": role,
        "email": email,
        "language": language,
    }
    try:
        with refusable(db, actor):
            user = service.create_user(
                db,
                actor,
                service.UserCreate(username, full_name, role, password, email or None, language),
            )
    except InvalidInput as exc:
        return _users_page(request, db, actor, errors=exc.field_errors, form=form, status=422)
    return _users_page(request, db, actor, created=user.username)


@router.post("/admin/users/{user_id}", response_class=HTMLResponse)
def update_user(
    request: Request,
    db: Db,
    actor: PageActor,
    user_id: RowId,
    role: FormStr = "",
    is_active: FormStr = "",
) -> Response:
    try:
        with refusable(db, actor):
            service.update_user(
                db,
                actor,
                user_id,
                role=role or None,
                is_active={"yes": True, "no": False}.get(is_active),
            )
    except DomainError as exc:
        return _users_page(request, db, actor, update_error=exc.message, status=exc.status)
    return RedirectResponse("/admin/users", status_code=303)


@router.post("/admin/users/{user_id}/credentials", response_class=HTMLResponse)
def reset_credentials(
    request: Request,
    db: Db,
    actor: PageActor,
    user_id: RowId,
    what: FormStr = "",
    reason: FormStr = "",
) -> Response:
    """Resets another user's password, two-step sign-in, browsers or API tokens, with a
    reason; a one-time password is shown in this answer only."""
    try:
        with refusable(db, actor):
            done = service.reset_credentials(db, actor, user_id, what, reason)
    except DomainError as exc:
        return _users_page(
            request,
            db,
            actor,
            update_error=exc.message,
            reset_for=user_id,
            reset_reason=reason,
            status=exc.status,
        )
    return _users_page(request, db, actor, reset_done=done, reset_what=what)
