"""Credentials made and credentials ended at the same moment, on both databases.

Each test holds one transaction open at the moment that matters and runs the other request
in a thread, so the race is not left to timing: the thread must wait for the account's lock
(PostgreSQL: the row lock; SQLite: the one writer), and what it does after the first commits
must take that commit into account. Before the account's lock, each of these let a way in
survive the reset meant to end it on PostgreSQL (ASVS 5.0 V7.4.3, V6.5.1).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pyotp
from argon2 import PasswordHasher
from sqlalchemy import func, select

from regenspine.auth import service as auth
from regenspine.auth.models import ApiToken, RecoveryCode, User, WebSession
from regenspine.auth.permissions import Role
from regenspine.db import unit_of_work
from regenspine.errors import N_, DomainError, Message, NotAuthenticated
from tests.conftest import PASSWORD, audit_count

REASON = "Identity checked in person at the front desk."


def _while_held(factory: Any, hold: Callable[[Any], Any], then: Callable[[Any], Any]) -> Any:
    """Runs `hold` in a transaction and keeps it open while `then` starts in a thread in its
    own; checks that `then` waits, commits `hold`, and returns what `then` returned or
    raised."""
    first, second = factory(), factory()
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(then(second))
            second.commit()
        except DomainError as exc:
            second.rollback()
            outcome.append(exc)

    try:
        hold(first)
        racer = threading.Thread(target=run)
        racer.start()
        racer.join(0.5)
        assert racer.is_alive(), "the second request did not wait for the account's lock"
        first.commit()
        racer.join(30)
        assert not racer.is_alive()
    finally:
        first.close()
        second.close()
    return outcome[0]


def _open_sessions(factory: Any, user_id: int) -> int:
    with factory() as s:
        return (
            s.scalar(
                select(func.count())
                .select_from(WebSession)
                .where(WebSession.user_id == user_id, WebSession.ended_at.is_(None))
            )
            or 0
        )


def test_one_recovery_code_completes_one_sign_in_when_two_send_it_at_once(factory, staff):
    doctor = staff.actor(Role.DOCTOR)
    with unit_of_work(factory) as s:
        secret = auth.begin_mfa_enrolment(s, doctor).secret
    with unit_of_work(factory) as s:
        codes = auth.confirm_mfa_enrolment(s, doctor, pyotp.TOTP(secret).now(), password=PASSWORD)
    halves = []
    for ip in ("10.0.0.1", "10.0.0.2"):
        with unit_of_work(factory) as s:
            halves.append(auth.sign_in(s, "doctor", PASSWORD, ip, "ua").session_token)

    second = _while_held(
        factory,
        lambda s: auth.complete_mfa(s, halves[0], codes[0], "10.0.0.1", "ua"),
        lambda s: auth.complete_mfa(s, halves[1], codes[0], "10.0.0.2", "ua"),
    )
    assert isinstance(second, DomainError)
    assert "The code is not correct" in second.message.render()
    passed = audit_count(factory, "auth.mfa_passed")
    with factory() as s:
        used = s.scalar(
            select(func.count()).select_from(RecoveryCode).where(RecoveryCode.used_at.is_not(None))
        )
    assert (passed, used) == (1, 1)


def test_a_sign_in_with_the_old_password_does_not_outlive_a_password_reset(factory, staff):
    nurse = staff.users[Role.NURSE]
    second = _while_held(
        factory,
        lambda s: auth.reset_credentials(s, staff.actor(Role.ADMIN), nurse.id, "password", REASON),
        lambda s: auth.sign_in(s, "nurse", PASSWORD, "10.0.0.9", "ua"),
    )
    assert isinstance(second, DomainError)  # the password it checked is no longer the password
    assert _open_sessions(factory, nurse.id) == 0


def test_a_token_made_while_the_tokens_are_revoked_is_revoked_too(factory, staff):
    nurse = staff.actor(Role.NURSE)
    revoked = _while_held(
        factory,
        lambda s: auth.create_api_token(s, nurse, "ward tablet", ["patient:read"]),
        lambda s: auth.reset_credentials(
            s, staff.actor(Role.ADMIN), nurse.user_id, "api_tokens", REASON
        ),
    )
    assert revoked.api_tokens_revoked == 1
    with factory() as s:
        assert s.scalar(select(ApiToken.revoked_at)) is not None


def test_a_token_made_while_the_account_is_disabled_is_revoked_too(factory, staff):
    nurse = staff.actor(Role.NURSE)
    _while_held(
        factory,
        lambda s: auth.create_api_token(s, nurse, "ward tablet", ["patient:read"]),
        lambda s: auth.update_user(
            s, staff.actor(Role.ADMIN), nurse.user_id, role=None, is_active=False
        ),
    )
    with factory() as s:
        assert s.scalar(select(ApiToken.revoked_at)) is not None


def test_a_browser_signed_out_by_a_reset_cannot_make_a_token_on_its_way_out(factory, staff):
    nurse = staff.actor(Role.NURSE)
    with unit_of_work(factory) as s:
        token = auth.sign_in(s, "nurse", PASSWORD, "10.0.0.3", "ua").session_token

    def make_token(s: Any) -> Any:
        browser = auth.resolve_session(s, token, "10.0.0.3")
        if browser is None:  # SQLite: the request waited for the writer at its first statement
            raise NotAuthenticated(Message(N_("Your sign-in has expired.")))
        return auth.create_api_token(
            s, nurse, "ward tablet", ["patient:read"], via_session=browser.web_session
        )

    second = _while_held(
        factory,
        lambda s: auth.reset_credentials(
            s, staff.actor(Role.ADMIN), nurse.user_id, "sessions", REASON
        ),
        make_token,
    )
    assert isinstance(second, DomainError)
    with factory() as s:
        assert s.scalar(select(func.count(ApiToken.id))) == 0


def test_a_token_revoked_twice_at_once_is_revoked_and_recorded_once(factory, staff):
    nurse = staff.actor(Role.NURSE)
    with unit_of_work(factory) as s:
        token_id = auth.create_api_token(s, nurse, "ward tablet", ["patient:read"])[0].id
    _while_held(
        factory,
        lambda s: auth.revoke_api_token(s, nurse, token_id),
        lambda s: auth.revoke_api_token(s, nurse, token_id),
    )
    assert audit_count(factory, "api_token.revoke") == 1


def test_one_username_asked_for_twice_at_once_makes_one_account_and_a_clear_refusal(factory, staff):
    admin = staff.actor(Role.ADMIN)
    data = auth.UserCreate("new-nurse", "New Nurse", "nurse", "correct-horse-battery-staple-9")
    second = _while_held(  # PostgreSQL: waiting on the unique index; SQLite: for the writer
        factory,
        lambda s: auth.create_user(s, admin, data),
        lambda s: auth.create_user(s, admin, data),
    )
    assert isinstance(second, DomainError), second
    assert "already taken" in second.field_errors["username"].render()


def test_two_sign_ins_with_the_right_password_at_once_both_succeed_while_its_hash_is_renewed(
    factory, staff
):
    """A password stored with older hashing parameters is hashed again at the next sign-in. A
    second sign-in that checked the old hash saw the hash change under the account's lock and
    was refused as a wrong password, counted towards the lock (PostgreSQL)."""
    nurse = staff.users[Role.NURSE]
    older = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1).hash(PASSWORD)
    with unit_of_work(factory) as s:
        s.get(User, nurse.id).password_hash = older

    second = _while_held(
        factory,
        lambda s: auth.sign_in(s, "nurse", PASSWORD, "10.0.0.1", "ua"),
        lambda s: auth.sign_in(s, "nurse", PASSWORD, "10.0.0.2", "ua"),
    )
    assert isinstance(second, auth.SignIn), second
    with factory() as s:
        assert s.get(User, nurse.id).password_hash != older
    assert _open_sessions(factory, nurse.id) == 2
    assert audit_count(factory, "auth.login_failed") == 0
