"""Queueing and delivering e-mail.

A message is queued in the caller's transaction, so it exists exactly when the change it
reports was committed. Delivery runs afterwards (`regenspine mail deliver`, every minute from
cron or a systemd timer), outside any request: a slow or absent mail server never holds up
the clinic. Each message is claimed before it is sent, so deliveries running on several
machines at once never send one twice; a message whose sending failed is tried again later,
up to MAX_ATTEMPTS times, with its last error kept for the administrator.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from regenspine.config import Settings
from regenspine.db import unit_of_work, utcnow
from regenspine.mail.models import OutboxMessage

MAX_ATTEMPTS = 8
# Wait before the next try, by the number of tries so far; the last one repeats.
RETRY_AFTER = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=4),
)
# How long a delivery holds a claimed message: longer than one SMTP conversation can take.
CLAIM_FOR = timedelta(minutes=5)
SMTP_TIMEOUT_SECONDS = 15


def queue(session: Session, *, recipient: str, subject: str, body: str, purpose: str) -> None:
    """Adds a message to the outbox in the caller's transaction."""
    session.add(
        OutboxMessage(
            recipient=recipient[:254],
            subject=subject[:200],
            body=body,
            purpose=purpose[:60],
            next_attempt_at=utcnow(),
            attempts=0,
        )
    )


@dataclass(frozen=True)
class DeliveryReport:
    sent: int
    failed: int
    waiting: int  # still unsent after this delivery, to be tried later
    given_up: int  # tried MAX_ATTEMPTS times without success


def deliver_pending(
    factory: sessionmaker[Session], settings: Settings, *, limit: int = 100
) -> DeliveryReport:
    """Sends the messages that are due, one at a time, each claimed in a short transaction of
    its own and marked sent (or failed) in another."""
    sent = failed = 0
    for _ in range(limit):
        message = _claim_next(factory)
        if message is None:
            break
        error = _send(settings, message)
        with unit_of_work(factory) as session:
            row = session.get(OutboxMessage, message.id)
            assert row is not None
            row.attempts += 1
            if error is None:
                row.sent_at = utcnow()
                row.last_error = None
                sent += 1
            else:
                row.last_error = error[:300]
                row.next_attempt_at = utcnow() + retry_after(row.attempts)
                failed += 1
    with factory() as session:
        waiting, given_up = session.execute(
            select(
                func.count(OutboxMessage.id).filter(OutboxMessage.attempts < MAX_ATTEMPTS),
                func.count(OutboxMessage.id).filter(OutboxMessage.attempts >= MAX_ATTEMPTS),
            ).where(OutboxMessage.sent_at.is_(None))
        ).one()
    return DeliveryReport(sent, failed, waiting, given_up)


def retry_after(attempts: int) -> timedelta:
    return RETRY_AFTER[min(attempts, len(RETRY_AFTER)) - 1]


@dataclass(frozen=True)
class _Claimed:
    id: int
    recipient: str
    subject: str
    body: str


def _claim_next(factory: sessionmaker[Session]) -> _Claimed | None:
    """The oldest due message, held for CLAIM_FOR: another delivery skips it meanwhile."""
    now = utcnow()
    with unit_of_work(factory) as session:
        row = session.scalars(
            select(OutboxMessage)
            .where(
                OutboxMessage.sent_at.is_(None),
                OutboxMessage.attempts < MAX_ATTEMPTS,
                OutboxMessage.next_attempt_at <= now,
            )
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if row is None:
            return None
        # Conditional, so that of two deliveries that read the same row only one claims it.
        claimed = session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row.id, OutboxMessage.next_attempt_at == row.next_attempt_at)
            .values(next_attempt_at=now + CLAIM_FOR)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return None
        return _Claimed(row.id, row.recipient, row.subject, row.body)


def smtp_tls_context(settings: Settings) -> ssl.SSLContext:
    """Trusts the system's certificate authorities, or only REGENSPINE_SMTP_CA_FILE's."""
    ca_file = str(settings.smtp_ca_file) if settings.smtp_ca_file else None
    return ssl.create_default_context(cafile=ca_file)


def _send(settings: Settings, message: _Claimed) -> str | None:
    """Hands the message to the SMTP server; None when it was accepted, else what went wrong
    (without the credentials)."""
    try:
        # An address or subject that cannot make a message (a line break in it, say) is one
        # failed attempt of this message, not the end of the whole run.
        email = EmailMessage()
        email["From"] = settings.smtp_sender
        email["To"] = message.recipient
        email["Subject"] = message.subject
        email["Message-ID"] = make_msgid(domain="regenspine")
        email.set_content(message.body)
    except (ValueError, UnicodeError) as exc:
        return f"{type(exc).__name__}: the message cannot be built ({exc})"
    try:
        with smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT_SECONDS
        ) as smtp:
            if settings.smtp_starttls:
                # The server's certificate and name are checked (ASVS V12.3.2); smtplib's
                # default would encrypt to anyone who answers.
                smtp.starttls(context=smtp_tls_context(settings))
            if settings.smtp_user and settings.smtp_password:
                smtp.login(settings.smtp_user, settings.smtp_password)
            smtp.send_message(email)
    except (TimeoutError, OSError, smtplib.SMTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
