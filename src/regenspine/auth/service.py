"""Sign-in, sessions, MFA, API tokens and staff accounts; every step leaves an audit record."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache, partial
from typing import Any, Protocol, cast

import pyotp
import segno
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import CursorResult, bindparam, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from regenspine.audit import service as audit
from regenspine.audit.models import AuditRecord
from regenspine.auth import notices
from regenspine.auth.actor import Actor
from regenspine.auth.models import ApiToken, RecoveryCode, User, WebSession
from regenspine.auth.permissions import ROLE_PERMISSIONS, Permission, Role
from regenspine.auth.rules import (
    CONTEXT_WORDS,
    PasswordStrength,
    SessionLifetime,
    ThrottlePolicy,
    check_password,
    describe_browser,
    session_expired,
    sign_in_locked,
)
from regenspine.config import get_settings
from regenspine.db import deferred_work, utcnow
from regenspine.errors import (
    N_,
    Conflict,
    DomainError,
    InvalidInput,
    Message,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    RefusalRecord,
    TooManyAttempts,
)
from regenspine.text import EMAIL_PATTERN, unstorable

# Refusals that are not worth an audit record each (anyone may send them, as fast as they like)
# but that an operator watching for misuse needs: the application log, as warnings.
security_log = logging.getLogger("regenspine.security")

LOGIN_FAILED = "auth.login_failed"
LOGIN_SUCCEEDED = "auth.login"
MFA_FAILED = "auth.mfa_failed"
MFA_PASSED = "auth.mfa_passed"
RECOVERY_CODE_COUNT = 10
TOKEN_PREFIX = "rst_"  # noqa: S105 (a visible prefix, not a secret)


class FormAlreadySent(Conflict):
    """A one-time form came back: what it asked for was done the first time."""


class InvalidCredentials(NotAuthenticated):
    title = "Sign-in failed"


@lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    s = get_settings()
    return PasswordHasher(
        time_cost=s.argon2_time_cost,
        memory_cost=s.argon2_memory_cost,
        parallelism=s.argon2_parallelism,
    )


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def _password_matches(stored_hash: str, password: str) -> bool:
    try:
        return _hasher().verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# A real hash to verify against when the username is unknown, so timing does not reveal it.
@lru_cache(maxsize=1)
def _decoy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _throttle_policy() -> ThrottlePolicy:
    s = get_settings()
    return ThrottlePolicy(
        max_failures_per_account=s.login_max_failures,
        max_failures_per_ip=s.login_max_failures_per_ip,
        window=timedelta(minutes=s.login_lock_minutes),
    )


def _lifetime() -> SessionLifetime:
    s = get_settings()
    return SessionLifetime(
        idle=timedelta(minutes=s.session_idle_minutes),
        absolute=timedelta(hours=s.session_absolute_hours),
    )


def _recent_failures(
    session: Session,
    account: str,
    since: datetime,
    failed: str = LOGIN_FAILED,
    succeeded: str = LOGIN_SUCCEEDED,
) -> int:
    """`failed` audit records for the account within the window, counted since its last
    `succeeded` one. Second-step codes are counted from the last complete sign-in
    (MFA_PASSED), not from a correct password (ASVS V6.3.1): whoever knows the password could
    otherwise sign in again and again to guess codes without end."""
    last_success = session.scalar(
        select(func.max(AuditRecord.at)).where(
            AuditRecord.action == succeeded, AuditRecord.entity_id == account
        )
    )
    start = max(since, last_success) if last_success else since
    return (
        session.scalar(
            select(func.count(AuditRecord.id)).where(
                AuditRecord.action == failed,
                AuditRecord.entity_id == account,
                AuditRecord.at > start,
            )
        )
        or 0
    )


def _sign_in_failures(
    session: Session, account: str, source_ip: str, policy: ThrottlePolicy, now: datetime
) -> tuple[int, int]:
    """Failed sign-ins of the account, and from the address, within the window (see
    rules.sign_in_locked)."""
    since = now - policy.window
    return (
        _recent_failures(session, account, since),
        _recent_failures_from_address(session, source_ip, since),
    )


def _recent_failures_from_address(session: Session, source_ip: str, since: datetime) -> int:
    """Failed sign-ins from the address within the window, but for those of an account that
    has since signed in from the same address: a colleague's typo is forgiven by their own
    success, an attacker's guesses at other accounts are not forgiven by the attacker signing
    in to their own (ASVS V6.3.1)."""
    success = aliased(AuditRecord)
    forgiven = (
        select(success.id)
        .where(
            success.action == LOGIN_SUCCEEDED,
            success.entity_id == AuditRecord.entity_id,
            success.source_ip == source_ip,
            success.at > AuditRecord.at,
        )
        .exists()
    )
    return (
        session.scalar(
            select(func.count(AuditRecord.id)).where(
                AuditRecord.action == LOGIN_FAILED,
                AuditRecord.source_ip == source_ip,
                AuditRecord.at > since,
                ~forgiven,
            )
        )
        or 0
    )


def _require_password(
    session: Session,
    actor: Actor,
    user: User,
    password: str,
    field: str = "password",
    *,
    browser: str | None = None,
) -> None:
    """Re-authentication before a change to the account: the form's `field` says what is
    wrong, and nothing is changed. A wrong password here counts towards the sign-in lock like
    one on the sign-in page (ASVS V6.3.1), and while the account is locked even the right one
    is refused: a hijacked browser must not become a way to guess the password.

    `browser` is the cookie token of the browser asking. The wrong password that locks the
    account, and every attempt while it is locked, also signs that browser out: whoever is
    guessing there loses the session they are guessing from. (The password is not checked
    while locked, so being signed out tells nothing about it.)"""
    policy = _throttle_policy()
    failures = _sign_in_failures(session, user.username, actor.source_ip, policy, utcnow())
    minutes = int(policy.window.total_seconds() // 60)
    if sign_in_locked(*failures, policy):
        reason = "locked"
    elif not _password_matches(user.password_hash, password):
        reason = "wrong_password_again"
    else:
        return
    if browser is not None and sign_in_locked(failures[0] + 1, failures[1] + 1, policy):
        message = Message(
            N_(
                "Too many wrong passwords: this browser has been signed out. Sign in again in "
                "%(minutes)s minutes; if this was not you, tell the administrator."
            ),
            minutes=minutes,
        )
        then: Callable[[Session], None] | None = partial(
            end_session, token=browser, reason="locked_out"
        )
    elif reason == "locked":
        message = Message(
            N_(
                "Too many wrong passwords. Try again in %(minutes)s minutes; if this was not "
                "you, tell the administrator."
            ),
            minutes=minutes,
        )
        then = None
    else:
        message, then = Message(N_("The current password is not correct.")), None
    raise InvalidInput(
        {field: message},
        refusal=RefusalRecord(
            action=LOGIN_FAILED,
            entity_type="user",
            entity_id=user.username,
            detail={"reason": reason},
            then=then,
        ),
    )


@dataclass(frozen=True)
class SignIn:
    user: User
    session_token: str
    web_session: WebSession

    @property
    def needs_mfa(self) -> bool:
        return not self.web_session.mfa_passed


def unknown_account_key(username: str) -> str:
    """How a sign-in with a name that matches no account is recorded: people type their
    password into the username field, so the text itself must not reach the audit log. The
    same name gives the same key, so repeated attempts still show and still lock."""
    return "unknown:" + sha256_hex(username)[:16]


def _failed(username: str, reason: str) -> InvalidCredentials:
    # One message for every cause, so an attacker learns nothing about accounts or locks.
    return InvalidCredentials(
        Message(
            N_(
                "Sign-in failed. Check your username and password. After several failed "
                "attempts the account is locked for a while."
            )
        ),
        refusal=RefusalRecord(
            action=LOGIN_FAILED, entity_type="user", entity_id=username, detail={"reason": reason}
        ),
    )


def sign_in(
    session: Session,
    username: str,
    password: str,
    source_ip: str,
    user_agent: str,
    previous_token: str | None = None,
) -> SignIn:
    username = username.strip().lower()[:150]
    now = utcnow()
    policy = _throttle_policy()
    # A name with a control character matches no account (and PostgreSQL could not compare it).
    user = (
        None
        if unstorable(username)
        else session.scalar(select(User).where(User.username == username))
    )
    account = username if user is not None else unknown_account_key(username)
    if sign_in_locked(*_sign_in_failures(session, account, source_ip, policy, now), policy):
        raise _failed(account, "locked")
    if user is None:
        _password_matches(_decoy_hash(), password)
        raise _failed(account, "unknown_user")
    verified = user.password_hash
    if not _password_matches(verified, password):
        raise _failed(username, "wrong_password")
    _lock_account(session, user)
    # Changed or reset while the password was checked: the new hash decides. A sign-in beside
    # it may only have re-hashed the same password with the current parameters.
    if user.password_hash != verified and not _password_matches(user.password_hash, password):
        raise _failed(username, "wrong_password")
    if not user.is_active:
        raise _failed(username, "inactive")
    if user.password_expires_at is not None and now >= user.password_expires_at:
        # Only the holder of the password gets this far: telling them is safe.
        raise InvalidCredentials(
            Message(
                N_(
                    "This one-time password has expired (they work for %(hours)s hours). Ask "
                    "the administrator for a new one."
                ),
                hours=ONE_TIME_PASSWORD_HOURS,
            ),
            refusal=RefusalRecord(
                action=LOGIN_FAILED,
                entity_type="user",
                entity_id=username,
                detail={"reason": "one_time_password_expired"},
            ),
        )
    if _hasher().check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    if previous_token:
        end_session(session, previous_token, "rotated")
    token, web_session = _open_session(
        session, user, source_ip, user_agent, mfa_passed=not user.mfa_enabled
    )
    actor = actor_for(user, source_ip)
    audit.record(
        session,
        actor,
        LOGIN_SUCCEEDED,
        entity_type="user",
        entity_id=user.username,
        detail={"mfa_pending": str(user.mfa_enabled)},
    )
    return SignIn(user, token, web_session)


def _open_session(
    session: Session, user: User, source_ip: str, user_agent: str, *, mfa_passed: bool
) -> tuple[str, WebSession]:
    token = secrets.token_urlsafe(32)
    now = utcnow()
    web_session = WebSession(
        id_hash=sha256_hex(token),
        user_id=user.id,
        created_at=now,
        last_seen_at=now,
        csrf_token=secrets.token_urlsafe(32),
        mfa_passed=mfa_passed,
        source_ip=source_ip[:64],
        user_agent=user_agent[:300],
    )
    session.add(web_session)
    session.flush()
    return token, web_session


class UserFields(Protocol):
    """A user row or ORM object: what an Actor is made of."""

    id: Any
    username: Any
    role: Any
    language: Any
    full_name: Any


def actor_for(
    user: UserFields, source_ip: str, scopes: frozenset[Permission] | None = None
) -> Actor:
    return Actor(
        user_id=user.id,
        username=user.username,
        role=Role(user.role),
        source_ip=source_ip,
        scopes=scopes,
        via_token=scopes is not None,
        language=user.language,
        full_name=user.full_name,
    )


def mfa_required(user: User) -> bool:
    return _mfa_required_for(user.role)


def _mfa_required_for(role: str) -> bool:
    s = get_settings()
    return s.mfa_enforced and (s.mfa_required_roles is None or role in s.mfa_required_roles)


def why_no_api_token(user: User) -> Message | None:
    """Why the account may not make an API token yet, if it may not. A token would be a way
    into the records round what the account still owes (ASVS V6.3.4, every way in is as strong
    as the strongest): a password of its own after a one-time one, or two-step sign-in where
    its role needs it."""
    if user.password_must_change:
        return Message(N_("Choose your own password first."))
    if mfa_required(user) and not user.mfa_enabled:
        return Message(N_("Turn on two-step sign-in first: your role needs it for API tokens too."))
    return None


@dataclass(frozen=True)
class ActiveSession:
    user: User
    web_session: WebSession


def resolve_session(session: Session, token: str, source_ip: str) -> ActiveSession | None:
    """The signed-in user behind a cookie, or None when it is unknown, ended or expired."""
    web_session = session.get(WebSession, sha256_hex(token))
    if web_session is None or web_session.ended_at is not None:
        return None
    user = session.get(User, web_session.user_id)
    now = utcnow()
    reason = session_expired(web_session.created_at, web_session.last_seen_at, now, _lifetime())
    if user is None or not user.is_active:
        reason = "account_disabled"
    if reason or user is None:
        web_session.ended_at = now
        web_session.end_reason = reason
        if user is not None:
            audit.record(
                session,
                actor_for(user, source_ip),
                "auth.session_ended",
                entity_type="user",
                entity_id=user.username,
                detail={"reason": reason},
            )
        return None
    # Writing on every request would serialise readers for nothing; a minute is precise enough.
    if now - web_session.last_seen_at > timedelta(seconds=60):
        web_session.last_seen_at = now
    return ActiveSession(user, web_session)


def ended_for_good(session: Session, token: str) -> bool:
    """Whether the browser holding this (no longer valid) session token should forget it. Not
    for a session replaced by a new one (two-step sign-in completed): the browser already holds
    the new cookie, and a late answer to a second copy of that form must not delete it."""
    reason = session.scalar(
        select(WebSession.end_reason).where(WebSession.id_hash == sha256_hex(token))
    )
    return reason != "rotated"


def end_session(session: Session, token: str, reason: str) -> None:
    web_session = session.get(WebSession, sha256_hex(token))
    if web_session is not None and web_session.ended_at is None:
        web_session.ended_at = utcnow()
        web_session.end_reason = reason


def sign_out(session: Session, actor: Actor, token: str) -> None:
    end_session(session, token, "logout")
    audit.record(session, actor, "auth.logout", entity_type="user", entity_id=actor.username)


def password_strength(password: str, username: str, full_name: str) -> PasswordStrength:
    """The password policy (auth/rules.py) for this person at this clinic: not built on their
    names, nor on the clinic's context words and its own (REGENSPINE_PASSWORD_CONTEXT_WORDS)."""
    own = get_settings().password_context_words.replace(",", " ").split()
    return check_password(password, (username, *full_name.split()), (*CONTEXT_WORDS, *own))


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret)


def matching_totp_step(secret: str, code: str, at: datetime, window: int = 1) -> int | None:
    """The time step (RFC 6238) whose code equals ``code``, within ``window`` steps of ``at``
    either way to allow for clock drift; None when no step matches."""
    totp = _totp(secret)
    found = None
    for offset in range(-window, window + 1):
        moment = at + timedelta(seconds=offset * totp.interval)
        if secrets.compare_digest(totp.at(moment), code):
            found = totp.timecode(moment)
    return found


def _accept_totp(session: Session, user: User, code: str) -> bool:
    """A correct code not used before (ASVS V6.5.1): each time step's code signs in once, so a
    code seen over someone's shoulder or in a proxy log cannot be replayed in its window."""
    if not user.mfa_secret or not code.isdigit():
        return False
    session.flush()
    session.refresh(user, with_for_update=True)  # two sign-ins with one code take turns
    step = matching_totp_step(user.mfa_secret, code, utcnow())
    if step is None or (user.mfa_last_step is not None and step <= user.mfa_last_step):
        return False
    user.mfa_last_step = step
    return True


def complete_mfa(
    session: Session, token: str, code: str, source_ip: str, user_agent: str
) -> tuple[str, WebSession]:
    """Second step of sign-in: a TOTP code or an unused recovery code rotates the session."""
    active = resolve_session(session, token, source_ip)
    if active is None:
        raise NotAuthenticated(Message(N_("Your sign-in has expired. Please sign in again.")))
    user = active.user
    # Two second steps of one account take turns: a recovery code is used once, and a reset
    # that ended this half-finished sign-in meanwhile is seen.
    _lock_account(session, user)
    session.refresh(active.web_session)
    if active.web_session.ended_at is not None or not user.is_active:
        raise NotAuthenticated(Message(N_("Your sign-in has expired. Please sign in again.")))
    policy = _throttle_policy()
    failures = _recent_failures(
        session, user.username, utcnow() - policy.window, MFA_FAILED, MFA_PASSED
    )
    if failures >= policy.max_failures_per_account:
        # Checked before the code, so that even the right code is refused while locked: the
        # answer tells a guesser nothing.
        raise TooManyAttempts(
            Message(
                N_(
                    "Too many wrong codes. Two-step sign-in for this account is locked for "
                    "%(minutes)s minutes. Sign in again later; if this was not you, tell the "
                    "administrator."
                ),
                minutes=int(policy.window.total_seconds() // 60),
            ),
            refusal=RefusalRecord(
                action="auth.mfa_locked", entity_type="user", entity_id=user.username
            ),
        )
    code = code.strip().replace(" ", "")
    ok = _accept_totp(session, user, code)  # digits only: a recovery code never matches
    used_recovery = False
    if not ok:
        # Used in one statement that also checks it is unused: once only, whatever runs beside.
        used = cast(
            "CursorResult[Any]",
            session.execute(
                update(RecoveryCode)
                .where(
                    RecoveryCode.user_id == user.id,
                    RecoveryCode.code_hash == recovery_code_hash(code),
                    RecoveryCode.used_at.is_(None),
                )
                .values(used_at=utcnow())
                .execution_options(synchronize_session=False)
            ),
        )
        ok = used_recovery = used.rowcount == 1
    if not ok:
        raise InvalidCredentials(
            Message(N_("The code is not correct or has expired. Try the newest code.")),
            refusal=RefusalRecord(action=MFA_FAILED, entity_type="user", entity_id=user.username),
        )
    end_session(session, token, "rotated")
    new_token, web_session = _open_session(session, user, source_ip, user_agent, mfa_passed=True)
    audit.record(
        session,
        actor_for(user, source_ip),
        MFA_PASSED,
        entity_type="user",
        entity_id=user.username,
        detail={"recovery_code": str(used_recovery)},
    )
    return new_token, web_session


@dataclass(frozen=True)
class MfaEnrolment:
    secret: str
    uri: str
    qr_svg: str


def begin_mfa_enrolment(session: Session, actor: Actor) -> MfaEnrolment:
    user = _user(session, actor.user_id)
    if user.mfa_enabled:
        raise Conflict(Message(N_("Two-step sign-in is already turned on for this account.")))
    if not user.mfa_secret:
        user.mfa_secret = pyotp.random_base32()
    uri = _totp(user.mfa_secret).provisioning_uri(name=user.username, issuer_name="RegenSpine")
    qr_svg = segno.make(uri, error="m").svg_inline(scale=4, dark="#1b2a3a")
    return MfaEnrolment(user.mfa_secret, uri, qr_svg)


def confirm_mfa_enrolment(
    session: Session, actor: Actor, code: str, *, password: str, keep_session: str | None = None
) -> list[str]:
    """Turns MFA on when the password, given again, is right and the first code from the
    authenticator matches; returns recovery codes.

    The password is asked again (ASVS V7.5.1): someone who took over a signed-in browser must
    not be able to tie the account to their own authenticator. Every other browser signed in
    as the user is signed out (V7.4.3): a session opened with a stolen password before MFA was
    turned on would otherwise outlive it. `keep_session` is the cookie token of the browser
    making the change."""
    user = _user(session, actor.user_id, lock=True)
    if user.mfa_enabled:
        raise Conflict(Message(N_("Two-step sign-in is already turned on for this account.")))
    _require_password(session, actor, user, password, browser=keep_session)
    if not _accept_totp(session, user, code.strip().replace(" ", "")):
        raise InvalidInput(
            {"code": Message(N_("The code does not match. Scan the QR code again and retry."))}
        )
    user.mfa_enabled = True
    codes = [new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    session.add_all(RecoveryCode(user_id=user.id, code_hash=recovery_code_hash(c)) for c in codes)
    _after_credential_change(session, actor, user, "mfa_enabled", keep_session)
    return codes


# 15 random bytes: 120 bits, above the 112 that ASVS V6.5.2 asks of a lookup secret kept as a
# plain hash (a slow hash would add nothing to a secret that cannot be guessed).
RECOVERY_CODE_BYTES = 15


def new_recovery_code() -> str:
    """A one-time recovery code to print or write down: 24 letters and digits from the base32
    alphabet (no 0, 1, 8 or 9 to misread), in groups of four."""
    raw = base64.b32encode(secrets.token_bytes(RECOVERY_CODE_BYTES)).decode().lower()
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def recovery_code_hash(code: str) -> str:
    """The stored form of a recovery code, as typed: case, spaces and dashes do not matter."""
    return sha256_hex(code.strip().lower().replace(" ", "").replace("-", ""))


def _after_credential_change(
    session: Session, actor: Actor, user: User, change: str, keep_session: str | None
) -> int:
    """After a change of the user's credentials: ends every other session of theirs and
    revokes their API tokens (ASVS V7.4.3: what was opened with the old credentials must not
    outlive them), and audits the change ("auth.<change>") with how many of each ended.
    Returns how many sessions were ended."""
    keep = sha256_hex(keep_session) if keep_session else None
    ended = end_open_sessions(session, user.id, change, keep=keep)
    revoked = revoke_all_api_tokens(session, user.id)
    audit.record(
        session,
        actor,
        f"auth.{change}",
        entity_type="user",
        entity_id=user.username,
        detail={"other_sessions_ended": ended, "api_tokens_revoked": revoked},
    )
    notices.notify(session, user, change)
    return ended


def revoke_all_api_tokens(session: Session, user_id: int) -> int:
    """Revokes every API token of the user still in force; returns how many."""
    now = utcnow()
    revoked = 0
    for token in session.scalars(
        select(ApiToken).where(
            ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None), ApiToken.expires_at > now
        )
    ):
        token.revoked_at = now
        revoked += 1
    return revoked


def mark_session_mfa_passed(web_session: WebSession) -> None:
    web_session.mfa_passed = True


def _set_password(user: User, password: str, *, temporary: bool, now: datetime) -> None:
    """A temporary password (one an administrator knows) works for ONE_TIME_PASSWORD_HOURS,
    and only to choose the person's own; an own password clears that."""
    user.password_hash = hash_password(password)
    user.password_changed_at = now
    user.password_must_change = temporary
    user.password_expires_at = now + timedelta(hours=ONE_TIME_PASSWORD_HOURS) if temporary else None


def change_password(
    session: Session, actor: Actor, current: str, new: str, *, keep_session: str | None = None
) -> int:
    """Changes the actor's password and signs out every other browser signed in as them, so
    that whoever learnt the old password loses the session they opened with it (ASVS V7.4.3).
    `keep_session` is the cookie token of the browser making the change. Returns how many
    other sessions were ended."""
    user = _user(session, actor.user_id, lock=True)
    _require_password(session, actor, user, current, "current_password", browser=keep_session)
    strength = password_strength(new, user.username, user.full_name)
    if not strength.acceptable:
        raise InvalidInput({"new_password": strength.problems[0]})
    if _password_matches(user.password_hash, new):
        raise InvalidInput(
            {"new_password": Message(N_("Choose a new password, not the current one."))}
        )
    _set_password(user, new, temporary=False, now=utcnow())
    return _after_credential_change(session, actor, user, "password_changed", keep_session)


def end_open_sessions(session: Session, user_id: int, reason: str, keep: str | None = None) -> int:
    """Ends every open session of the user except the one whose id hash is `keep`."""
    now = utcnow()
    ended = 0
    for web_session in session.scalars(
        select(WebSession).where(WebSession.user_id == user_id, WebSession.ended_at.is_(None))
    ):
        if web_session.id_hash != keep:
            web_session.ended_at = now
            web_session.end_reason = reason
            ended += 1
    return ended


def session_ref(id_hash: str) -> str:
    """The name of a signed-in browser on the account page. Derived from the stored hash, so
    that a page never shows anything that is kept to recognise the cookie."""
    return sha256_hex(f"session-ref:{id_hash}")[:16]


@dataclass(frozen=True)
class OpenSession:
    ref: str
    browser: str
    system: str
    source_ip: str
    created_at: datetime
    last_seen_at: datetime
    current: bool


def list_open_sessions(
    session: Session, actor: Actor, *, current_token: str | None = None
) -> list[OpenSession]:
    """The browsers signed in as the actor now (ASVS V7.5.2), most recently active first.
    Sessions past their idle or absolute limit are left out: they can no longer be used."""
    now = utcnow()
    lifetime = _lifetime()
    current = sha256_hex(current_token) if current_token else None
    rows = session.scalars(
        select(WebSession)
        .where(WebSession.user_id == actor.user_id, WebSession.ended_at.is_(None))
        .order_by(WebSession.last_seen_at.desc(), WebSession.created_at.desc())
    )
    return [
        OpenSession(
            session_ref(w.id_hash),
            *describe_browser(w.user_agent),
            source_ip=w.source_ip,
            created_at=w.created_at,
            last_seen_at=w.last_seen_at,
            current=w.id_hash == current,
        )
        for w in rows
        if session_expired(w.created_at, w.last_seen_at, now, lifetime) is None
    ]


ALL_OTHER_SESSIONS = "others"


def sign_out_other_sessions(
    session: Session, actor: Actor, password: str, which: str, *, current_token: str | None
) -> int:
    """Ends one other browser of the actor (`which` is its ref from list_open_sessions) or all
    of them (`which` is ALL_OTHER_SESSIONS), after the actor proves again who they are with
    their password (ASVS V7.5.2). The browser asking stays signed in. Returns how many
    sessions were ended."""
    user = _user(session, actor.user_id)
    _require_password(session, actor, user, password, browser=current_token)
    keep = sha256_hex(current_token) if current_token else None
    if which == ALL_OTHER_SESSIONS:
        ended = end_open_sessions(session, user.id, "signed_out_by_user", keep=keep)
    else:
        ended = _end_session_by_ref(session, user.id, which, keep)
    audit.record(
        session,
        actor,
        "auth.sessions_signed_out",
        entity_type="user",
        entity_id=user.username,
        detail={"which": "all_others" if which == ALL_OTHER_SESSIONS else "one", "ended": ended},
    )
    return ended


def _end_session_by_ref(session: Session, user_id: int, ref: str, keep: str | None) -> int:
    for web_session in session.scalars(
        select(WebSession).where(WebSession.user_id == user_id, WebSession.ended_at.is_(None))
    ):
        if session_ref(web_session.id_hash) == ref:
            if web_session.id_hash == keep:
                raise InvalidInput(
                    {
                        "session": Message(
                            N_("This is the browser you are using. Use Sign out to end it.")
                        )
                    }
                )
            web_session.ended_at = utcnow()
            web_session.end_reason = "signed_out_by_user"
            return 1
    raise InvalidInput(
        {"session": Message(N_("That browser is no longer signed in. Choose one from the list."))}
    )


def set_language(session: Session, actor: Actor, language: str) -> None:
    if language not in ("pl", "en"):
        raise InvalidInput({"language": Message(N_("Choose Polish or English."))})
    user = _user(session, actor.user_id)
    user.language = language


def _user(session: Session, user_id: int | None, *, lock: bool = False) -> User:
    """The account; with `lock`, its row locked for the rest of the transaction and read
    afresh (see _lock_account)."""
    if lock:
        session.flush()
    user = (
        session.get(User, user_id, with_for_update=lock or None, populate_existing=lock)
        if user_id is not None
        else None
    )
    if user is None:
        raise NotFound(Message(N_("This account does not exist.")))
    return user


def _lock_account(session: Session, user: User) -> None:
    """Locks the account's row for the rest of the transaction and reads it afresh.

    Everything that makes a way to act as the account (a sign-in, its second step, an API
    token) and everything that ends them all (a reset, a password change, enabling two-step
    sign-in, disabling the account) takes this lock first. So the two take turns, and the one
    that goes second sees what the first committed: a reset never misses a session or token
    made while it ran, and a sign-in with the old password never lands after the reset (on
    PostgreSQL; SQLite admits one writer at a time anyway)."""
    session.flush()
    session.refresh(user, with_for_update=True)


# --- staff accounts -----------------------------------------------------------------------


@dataclass(frozen=True)
class UserCreate:
    username: str
    full_name: str
    role: str
    password: str
    email: str | None = None
    language: str = "en"


USERNAME_ALLOWED = set("abcdefghijklmnopqrstuvwxyz0123456789._-")


def create_user(session: Session, actor: Actor, data: UserCreate) -> User:
    actor.require(Permission.USER_MANAGE)
    username = data.username.strip().lower()
    errors: dict[str, Message] = {}
    if not (3 <= len(username) <= 150) or set(username) - USERNAME_ALLOWED:
        errors["username"] = Message(
            N_("A username has 3-150 characters: lowercase letters, digits, dot, dash, underscore.")
        )
    elif session.scalar(select(User.id).where(User.username == username)):
        errors["username"] = Message(N_("This username is already taken."))
    full_name = data.full_name.strip()
    if not (1 <= len(full_name) <= 200):
        errors["full_name"] = Message(N_("Enter the person's full name (at most 200 characters)."))
    if data.role not in {r.value for r in Role}:
        errors["role"] = Message(N_("Choose one of the listed roles."))
    if data.language not in ("pl", "en"):
        errors["language"] = Message(N_("Choose Polish or English."))
    email = (data.email or "").strip() or None
    if email is not None and (len(email) > 254 or not EMAIL_PATTERN.match(email)):
        errors["email"] = Message(N_("Enter an email address like name@example.com."))
    strength = password_strength(data.password, username, full_name)
    if not strength.acceptable:
        errors["password"] = strength.problems[0]
    if errors:
        raise InvalidInput(errors)
    now = utcnow()
    user = User(
        username=username,
        full_name=full_name,
        email=email,
        role=data.role,
        language=data.language,
        created_at=now,
    )
    # An administrator knows the first password they chose: it is temporary (ASVS V6.4.1). The
    # command line's accounts (the first administrator, the demo) are set up by their users.
    _set_password(user, data.password, temporary=not actor.is_system, now=now)
    try:
        with session.begin_nested():  # the same name sent twice at once: one account
            session.add(user)
    except IntegrityError:
        raise InvalidInput({"username": Message(N_("This username is already taken."))}) from None
    audit.record(
        session,
        actor,
        "user.create",
        entity_type="user",
        entity_id=username,
        detail={"role": data.role},
    )
    return user


def list_users(session: Session, actor: Actor) -> list[User]:
    actor.require(Permission.USER_MANAGE)
    return list(session.scalars(select(User).order_by(User.role, User.username)))


def update_user(
    session: Session, actor: Actor, user_id: int, *, role: str | None, is_active: bool | None
) -> User:
    actor.require(Permission.USER_MANAGE)
    user = _user(session, user_id, lock=True)
    if role is not None and role not in {r.value for r in Role}:
        raise InvalidInput({"role": Message(N_("Choose one of the listed roles."))})
    if user.id == actor.user_id and (is_active is False or (role and role != user.role)):
        raise Conflict(Message(N_("You cannot change your own role or disable your own account.")))
    changes: dict[str, str] = {}
    if role is not None and role != user.role:
        changes["role"] = f"{user.role} -> {role}"
        user.role = role
    if is_active is not None and is_active != user.is_active:
        changes["is_active"] = f"{user.is_active} -> {is_active}"
        user.is_active = is_active
        if not is_active:
            # Everything the account could act through ends with it: enabling it again later
            # brings back none of its browsers or API tokens, only its password (a token
            # handed to an integration while the account was in use stays revoked).
            ended = end_open_sessions(session, user.id, "account_disabled")
            revoked = revoke_all_api_tokens(session, user.id)
            changes["sessions_ended"] = str(ended)
            changes["api_tokens_revoked"] = str(revoked)
    if changes:
        audit.record(
            session,
            actor,
            "user.update",
            entity_type="user",
            entity_id=user.username,
            detail=changes,
        )
    return user


class CredentialReset(StrEnum):
    """What an administrator can take away from another account when it may be compromised
    or its owner has lost their authenticator (ASVS V6.4.3, V7.4.5)."""

    TWO_STEP = "two_step"  # two-step sign-in off, every session ended, every token revoked
    API_TOKENS = "api_tokens"  # every API token revoked
    SESSIONS = "sessions"  # every browser signed out
    # A forgotten password (ASVS V6.4.1, V6.4.3): a one-time password to hand over in person,
    # valid for ONE_TIME_PASSWORD_HOURS and only to choose a new one; every session ended and
    # every token revoked. Two-step sign-in stays as it was: the reset does not bypass it.
    PASSWORD = "password"  # noqa: S105 (the name of a reset, not a password)


ONE_TIME_PASSWORD_HOURS = 72


@dataclass(frozen=True)
class CredentialResetResult:
    user: User
    sessions_ended: int
    api_tokens_revoked: int
    one_time_password: str | None = None  # shown once to the administrator, never stored


def new_one_time_password() -> str:
    """20 letters and digits in groups of four (100 bits), easy to read out and type."""
    raw = base64.b32encode(secrets.token_bytes(15)).decode().lower()[:20]
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def reset_credentials(
    session: Session, actor: Actor, user_id: int, what: str, reason: str
) -> CredentialResetResult:
    """An administrator's reset of another user's two-step sign-in or API tokens, with the
    reason recorded in the audit log. After a two-step reset the user signs in with their
    password alone, and sets up a new authenticator (the old recovery codes no longer work);
    where two-step sign-in is required for their role, they are asked to at once."""
    actor.require(Permission.USER_MANAGE)
    user = _user(session, user_id, lock=True)
    errors: dict[str, Message] = {}
    if what not in {c.value for c in CredentialReset}:
        errors["what"] = Message(
            N_(
                "Choose what to reset: the password, two-step sign-in, the signed-in browsers "
                "or the API tokens."
            )
        )
    reason = " ".join(reason.split())
    if not (10 <= len(reason) <= 500):
        errors["reason"] = Message(
            N_(
                "Give the reason in 10 to 500 characters, e.g. how the person's identity was "
                "checked."
            )
        )
    if errors:
        raise InvalidInput(errors)
    if user.id == actor.user_id:
        raise Conflict(
            Message(
                N_(
                    "You cannot reset your own sign-in here; another administrator must do it. "
                    "Your own API tokens are on My account."
                )
            )
        )
    ended = revoked = 0
    one_time: str | None = None
    if what == CredentialReset.TWO_STEP:
        if not user.mfa_enabled:
            raise Conflict(Message(N_("Two-step sign-in is not turned on for this account.")))
        user.mfa_enabled = False
        user.mfa_secret = None
        user.mfa_last_step = None
        session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    elif what == CredentialReset.PASSWORD:
        one_time = new_one_time_password()
        _set_password(user, one_time, temporary=True, now=utcnow())
    if what != CredentialReset.API_TOKENS:
        ended = end_open_sessions(session, user.id, f"{what}_reset")
    if what != CredentialReset.SESSIONS:
        revoked = revoke_all_api_tokens(session, user.id)
    audit.record(
        session,
        actor,
        f"user.reset_{what}",
        entity_type="user",
        entity_id=user.username,
        detail={"reason": reason, "sessions_ended": ended, "api_tokens_revoked": revoked},
    )
    notices.notify(session, user, f"reset_{what}", admin=actor.full_name, reason=reason)
    return CredentialResetResult(user, ended, revoked, one_time)


# --- API tokens ---------------------------------------------------------------------------


TOKEN_DAYS_DEFAULT = 90
TOKEN_DAYS_MAX = 366


FORM_KEY = re.compile(r"[A-Za-z0-9_-]{16,43}")


def _token_refusal(found: Any, now: datetime) -> str | None:
    """Why a token (a _TOKEN_AND_OWNER row, or None) does not sign in, if it does not."""
    if found is None:
        return "unknown"
    if found.revoked_at is not None:
        return "revoked"
    if found.expires_at <= now:
        return "expired"
    if not found.is_active:
        return "account_disabled"
    if not found.mfa_enabled and _mfa_required_for(found.role):
        return "two_step_owed"
    return None


def _visible_prefix(secret: str) -> str:
    """What the account page shows of a token ("Starts with"): enough to tell which one was
    meant, far too little to use it. Anything else is cut to its shape."""
    prefix = secret[:10]
    return prefix if TOKEN_SHAPE.fullmatch(secret) else f"(not a token, {len(secret)} characters)"


TOKEN_SHAPE = re.compile(r"rst_[A-Za-z0-9_-]{43}")


def new_form_key() -> str:
    """A one-time key for a form that must not take effect twice (create_api_token)."""
    return secrets.token_urlsafe(24)


def _refuse_sent_form(session: Session, user: User, form_key: str) -> None:
    if not FORM_KEY.fullmatch(form_key):
        raise InvalidInput(
            {
                "name": Message(
                    N_(
                        "This form is out of date. Reload the page and try again; "
                        "no token was made."
                    )
                )
            }
        )
    made = session.scalar(
        select(ApiToken.name).where(ApiToken.user_id == user.id, ApiToken.form_key == form_key)
    )
    if made is not None:
        raise FormAlreadySent(
            Message(
                N_(
                    "This form was already sent and made the token “%(name)s”. Its secret was "
                    "shown only once and is not kept: if you did not copy it, revoke that token "
                    "and create a new one."
                ),
                name=made,
            )
        )


def create_api_token(
    session: Session,
    actor: Actor,
    name: str,
    scopes: list[str],
    days_valid: int = TOKEN_DAYS_DEFAULT,
    form_key: str | None = None,
    via_session: WebSession | None = None,
) -> tuple[ApiToken, str]:
    """Returns the stored token and, once only, its secret value. Every token expires, within
    a year at most (ASVS V7.1.1): a forgotten integration's token must not work for ever.

    `form_key` is the one-time key of the page's form (new_form_key). The page shows the secret
    in its answer to the form, so a reload sends the form again: the same key then finds the
    token it made and is refused, also when both copies arrive at once.

    `via_session` is the browser session asking: read again once the account is locked, so a
    token is never made for a session that a reset ended while this request ran."""
    if actor.via_token:
        raise DomainError(Message(N_("API tokens cannot create other API tokens.")))
    user = _user(session, actor.user_id, lock=True)
    if via_session is not None:
        session.refresh(via_session)  # after the lock: a reset that ended it meanwhile is seen
        if via_session.ended_at is not None or not user.is_active:
            raise NotAuthenticated(Message(N_("Your sign-in has expired. Please sign in again.")))
    owed = why_no_api_token(user)
    if owed is not None:
        raise PermissionDenied(owed)
    if form_key is not None:
        _refuse_sent_form(session, user, form_key)
    errors: dict[str, Message] = {}
    name = name.strip()
    if not (1 <= len(name) <= 100):
        errors["name"] = Message(N_("Give the token a name of at most 100 characters."))
    allowed = {p.value for p in ROLE_PERMISSIONS[Role(user.role)]}
    unknown = [s for s in scopes if s not in allowed]
    if not scopes or unknown:
        errors["scopes"] = Message(
            N_("Choose one or more scopes your role has: %(allowed)s."),
            allowed=", ".join(sorted(allowed)),
        )
    if not (1 <= days_valid <= TOKEN_DAYS_MAX):
        errors["days_valid"] = Message(N_("A token is valid for 1 to 366 days."))
    if errors:
        raise InvalidInput(errors)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    token = ApiToken(
        user_id=user.id,
        name=name,
        token_hash=sha256_hex(secret),
        prefix=secret[:10],
        scopes=" ".join(sorted(set(scopes))),
        created_at=now,
        expires_at=now + timedelta(days=days_valid),
        form_key=form_key,
    )
    try:
        with session.begin_nested():
            session.add(token)
    except IntegrityError:  # the same form, sent twice at once: the other copy made it
        _refuse_sent_form(session, user, form_key or "")
        raise
    audit.record(
        session,
        actor,
        "api_token.create",
        entity_type="api_token",
        entity_id=token.id,
        detail={"scopes": token.scopes, "days_valid": days_valid},
    )
    return token, secret


def _refuse_token_holder(actor: Actor) -> None:
    """Tokens are managed by their owner, signed in; a token of any scope may not list its
    owner's other tokens or revoke them (ASVS V8.2.1)."""
    if actor.via_token:
        raise PermissionDenied(
            Message(N_("API tokens are managed on the account page, signed in, not with a token."))
        )


def list_api_tokens(session: Session, actor: Actor) -> list[ApiToken]:
    _refuse_token_holder(actor)
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.user_id == actor.user_id).order_by(ApiToken.id.desc())
        )
    )


def revoke_api_token(session: Session, actor: Actor, token_id: int) -> None:
    _refuse_token_holder(actor)
    # Locked and read afresh: a second revoke sent at the same time finds it revoked.
    token = session.get(ApiToken, token_id, with_for_update=True, populate_existing=True)
    if token is None or token.user_id != actor.user_id:
        raise NotFound(Message(N_("This API token does not exist.")))
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit.record(
            session, actor, "api_token.revoke", entity_type="api_token", entity_id=token.id
        )


def _touch_token(token_id: int, now: datetime) -> Callable[[Session], None]:
    def touch(session: Session) -> None:
        session.execute(
            update(ApiToken)
            .where(ApiToken.id == token_id)
            .where(or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < now))
            .values(last_used_at=now)
        )

    return touch


# The token and its owner in one statement, built once: this runs on every API request, and
# plain rows cost a fraction of loading the two ORM objects.
_TOKEN_AND_OWNER = (
    select(
        ApiToken.id.label("token_id"),
        ApiToken.scopes,
        ApiToken.expires_at,
        ApiToken.last_used_at,
        ApiToken.revoked_at,
        User.id,
        User.username,
        User.role,
        User.language,
        User.full_name,
        User.is_active,
        User.mfa_enabled,
    )
    .join(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_hash == bindparam("token_hash"))
)


def resolve_api_token(session: Session, secret: str, source_ip: str) -> Actor | None:
    """The actor the token acts as, or None for a token that does not sign in; each refusal is
    logged with its reason and the token's visible prefix, never the secret (ASVS V16.3.1)."""
    found = (
        session.connection().execute(_TOKEN_AND_OWNER, {"token_hash": sha256_hex(secret)}).first()
    )
    now = utcnow()
    refused = _token_refusal(found, now)
    if refused is not None:
        security_log.warning(
            "API token refused: reason=%s prefix=%s user=%s ip=%s",
            refused,
            _visible_prefix(secret),
            found.username if found is not None else "-",
            source_ip,
        )
    if found is None or refused in ("revoked", "expired", "account_disabled"):
        return None
    if refused == "two_step_owed":
        # A token made before the role needed two-step sign-in, or before an administrator
        # turned it off: it must not be the way round the second step.
        raise PermissionDenied(
            Message(
                N_(
                    "The owner of this API token must turn on two-step sign-in before the "
                    "token can be used."
                )
            )
        )
    if found.last_used_at is None or now - found.last_used_at > timedelta(minutes=1):
        touch = _touch_token(found.token_id, now)
        work = deferred_work(session)
        if work is None:
            touch(session)
        else:  # a read-only request: written with its audit record, before the answer
            work.writes.append(touch)
    scopes = frozenset(
        Permission(s) for s in found.scopes.split() if s in Permission._value2member_map_
    )
    return actor_for(found, source_ip, scopes=scopes)
