"""Notices of changed sign-in details (ASVS 5.0 V6.3.7), sent through a real SMTP server.

The server is aiosmtpd listening on 127.0.0.1: the clinic's own SMTP client (smtplib) talks
the real protocol to it. A message is queued in the transaction of the change it reports and
delivered afterwards by `regenspine mail deliver`."""

from __future__ import annotations

import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from regenspine.auth.models import User
from regenspine.config import get_settings
from regenspine.db import unit_of_work, utcnow
from regenspine.mail import service as mail
from regenspine.mail.models import OutboxMessage
from tests.conftest import PASSWORD, free_port, sign_in

NEW_PASSWORD = "a-quiet-lighthouse-by-the-fjord-7"


@dataclass
class Inbox:
    """What the SMTP server accepted, by recipient."""

    port: int
    received: list[tuple[list[str], EmailMessage]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        parsed = message_from_bytes(envelope.original_content, policy=policy.default)
        with self.lock:
            self.received.append((list(envelope.rcpt_tos), parsed))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    box = Inbox(port=free_port())
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


def _settings(database_url: str, port: int):
    return get_settings().model_copy(
        update={"database_url": database_url, "smtp_host": "127.0.0.1", "smtp_port": port}
    )


def _set_email(factory, username: str, email: str | None, language: str = "en") -> None:
    with unit_of_work(factory) as s:
        s.execute(
            update(User).where(User.username == username).values(email=email, language=language)
        )


def _outbox(factory) -> list[OutboxMessage]:
    with factory() as s:
        return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def test_a_password_change_is_emailed_to_the_owner_through_a_real_mail_server(
    app, staff, factory, database_url, inbox
):
    """The owner learns of the change even if someone else made it; the notice holds no
    secret; a refused change sends nothing; a user without an address is not written to."""
    _set_email(factory, "nurse", "nurse@clinic.example")
    owner = sign_in(app, "nurse")
    refused = owner.post(
        "/account/password",
        data={"current_password": "not-my-password-123", "new_password": NEW_PASSWORD},
    )
    assert refused.status_code == 422
    assert _outbox(factory) == []

    changed = owner.post(
        "/account/password", data={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert changed.status_code == 200, changed.text
    no_address = sign_in(app, "coordinator").post(
        "/account/password", data={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert no_address.status_code == 200
    queued = _outbox(factory)
    assert [(m.recipient, m.purpose, m.sent_at) for m in queued] == [
        ("nurse@clinic.example", "auth.password_changed", None)
    ]

    report = mail.deliver_pending(factory, _settings(database_url, inbox.port))
    assert (report.sent, report.failed, report.waiting) == (1, 0, 0)
    [(to, message)] = inbox.received
    assert to == ["nurse@clinic.example"]
    assert message["Subject"] == "Your RegenSpine password was changed"
    assert message["From"] == get_settings().smtp_sender
    text = message.get_content()
    assert "account nurse was changed on" in text
    assert "tell the clinic's administrator at once" in text
    assert NEW_PASSWORD not in text and PASSWORD not in text and "http" not in text
    assert _outbox(factory)[0].sent_at is not None

    again = mail.deliver_pending(factory, _settings(database_url, inbox.port))
    assert (again.sent, len(inbox.received)) == (0, 1)  # sent once only


def test_an_unreachable_mail_server_keeps_the_notice_and_it_is_sent_later_in_polish(
    app, staff, factory, database_url, inbox, monkeypatch
):
    """An administrator's reset is told to the user in their own language, with the reason.
    While the mail server is down the message stays queued with the error, and is tried
    again after the back-off, not before."""
    _set_email(factory, "medical-director", "dyrektor@klinika.example", language="pl")
    with unit_of_work(factory) as s:
        director = s.scalars(select(User).where(User.username == "medical-director")).one()
        director.mfa_enabled = True
        director_id = director.id
    admin = sign_in(app, "admin")
    reason = "Zgubiony telefon; tożsamość sprawdzona osobiście."
    done = admin.post(
        f"/api/v1/users/{director_id}/credential-resets",
        json={"what": "two_step", "reason": reason},
    )
    assert done.status_code == 200, done.text

    down = mail.deliver_pending(factory, _settings(database_url, free_port()))
    assert (down.sent, down.failed, down.waiting) == (0, 1, 1)
    [held] = _outbox(factory)
    assert held.attempts == 1 and held.sent_at is None
    assert "ConnectionRefusedError" in (held.last_error or "")
    assert held.next_attempt_at - utcnow() > timedelta(seconds=50)

    too_soon = mail.deliver_pending(factory, _settings(database_url, inbox.port))
    assert (too_soon.sent, too_soon.waiting, inbox.received) == (0, 1, [])

    later = utcnow() + mail.retry_after(1) + timedelta(seconds=1)
    monkeypatch.setattr(mail, "utcnow", lambda: later)
    up = mail.deliver_pending(factory, _settings(database_url, inbox.port))
    assert (up.sent, up.failed, up.waiting) == (1, 0, 0)
    [(to, message)] = inbox.received
    assert to == ["dyrektor@klinika.example"]
    assert (
        message["Subject"] == "Logowanie dwuetapowe zostało wyłączone dla Twojego konta RegenSpine"
    )
    text = message.get_content()
    assert reason in text and "Test Admin" in text
    assert _outbox(factory)[0].attempts == 2


def test_two_deliveries_at_once_send_each_notice_exactly_once(staff, factory, database_url, inbox):
    """Deliveries may run on several machines: each message is claimed before it is sent."""
    with unit_of_work(factory) as s:
        for n in range(24):
            mail.queue(
                s,
                recipient=f"staff{n}@clinic.example",
                subject=f"notice {n}",
                body="x",
                purpose="test",
            )
    settings = _settings(database_url, inbox.port)
    reports: list[mail.DeliveryReport] = []
    threads = [
        threading.Thread(target=lambda: reports.append(mail.deliver_pending(factory, settings)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sum(r.sent for r in reports) == 24 and sum(r.failed for r in reports) == 0
    subjects = sorted(m["Subject"] for _, m in inbox.received)
    assert subjects == sorted(f"notice {n}" for n in range(24))
    with factory() as s:
        assert s.scalar(select(func.count()).where(OutboxMessage.sent_at.is_(None))) == 0


def test_the_mail_deliver_command_sends_and_fails_loudly(
    staff, factory, database_url, inbox, monkeypatch
):
    from regenspine.cli import app as cli

    with unit_of_work(factory) as s:
        mail.queue(s, recipient="a@clinic.example", subject="one", body="x", purpose="test")
    monkeypatch.setenv("REGENSPINE_DATABASE_URL", database_url)
    monkeypatch.setenv("REGENSPINE_SMTP_PORT", str(free_port()))
    get_settings.cache_clear()
    try:
        failed = CliRunner().invoke(cli, ["mail", "deliver"])
        assert failed.exit_code == 1, failed.output
        assert "Sent 0, failed 1; 1 waiting" in failed.output
        with unit_of_work(factory) as s:  # due again now
            s.execute(update(OutboxMessage).values(next_attempt_at=utcnow()))
        monkeypatch.setenv("REGENSPINE_SMTP_PORT", str(inbox.port))
        get_settings.cache_clear()
        sent = CliRunner().invoke(cli, ["mail", "deliver"])
        assert sent.exit_code == 0, sent.output
        assert "Sent 1, failed 0; 0 waiting" in sent.output
    finally:
        get_settings.cache_clear()
    assert [to for to, _ in inbox.received] == [["a@clinic.example"]]


def _certificate(folder: Path, name: str, alt_name: str) -> tuple[Path, Path]:
    """A self-signed certificate and its key, made with openssl."""
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
         "-addext", f"subjectAltName={alt_name}"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@contextmanager
def _tls_mail_server(cert: Path, key: Path) -> Iterator[Inbox]:
    """A mail server that accepts mail only after STARTTLS, presenting `cert`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    box = Inbox(port=free_port())
    controller = Controller(
        box, hostname="127.0.0.1", port=box.port, tls_context=context, require_starttls=True
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


def _all_due(factory) -> None:
    with unit_of_work(factory) as s:
        s.execute(update(OutboxMessage).values(next_attempt_at=utcnow() - timedelta(seconds=1)))


def test_mail_goes_only_to_a_server_whose_certificate_and_name_check_out(
    factory, database_url, tmp_path
):
    """ASVS 5.0 V12.3.2: with STARTTLS on, the mail server's certificate must be signed by an
    authority the clinic trusts (the system's, or REGENSPINE_SMTP_CA_FILE) and name the host
    connected to. A self-signed certificate, or a trusted one for another name, leaves the
    notice queued with the reason; the right one delivers it, encrypted."""
    with unit_of_work(factory) as s:
        mail.queue(
            s, recipient="nurse@clinic.example", subject="Notice", body="Text", purpose="test"
        )
    cert, key = _certificate(tmp_path, "mail", "IP:127.0.0.1")
    other_cert, other_key = _certificate(tmp_path, "other", "DNS:mail.elsewhere.example")
    with _tls_mail_server(cert, key) as box:
        base = _settings(database_url, box.port)
        plain = mail.deliver_pending(factory, base)
        assert (plain.sent, plain.failed) == (0, 1)
        assert "STARTTLS" in (_outbox(factory)[0].last_error or "")  # the server insists

        _all_due(factory)
        untrusted = mail.deliver_pending(factory, base.model_copy(update={"smtp_starttls": True}))
        assert (untrusted.sent, untrusted.failed) == (0, 1)
        assert "CERTIFICATE_VERIFY_FAILED" in (_outbox(factory)[0].last_error or "")
        assert box.received == []

        _all_due(factory)
        trusted = base.model_copy(update={"smtp_starttls": True, "smtp_ca_file": cert})
        delivered = mail.deliver_pending(factory, trusted)
        assert (delivered.sent, delivered.failed) == (1, 0)
        [(to, message)] = box.received
        assert to == ["nurse@clinic.example"] and message["Subject"] == "Notice"

    with unit_of_work(factory) as s:
        mail.queue(s, recipient="nurse@clinic.example", subject="Again", body="T", purpose="test")
    with _tls_mail_server(other_cert, other_key) as box:
        wrong_name = _settings(database_url, box.port).model_copy(
            update={"smtp_starttls": True, "smtp_ca_file": other_cert}
        )
        refused = mail.deliver_pending(factory, wrong_name)
        assert (refused.sent, refused.failed) == (0, 1)
        error = next(m.last_error for m in _outbox(factory) if m.subject == "Again") or ""
        assert "CERTIFICATE_VERIFY_FAILED" in error and "mismatch" in error
        assert box.received == []


def test_a_message_that_cannot_be_built_fails_alone_and_the_rest_are_sent(
    staff, factory, database_url, inbox
):
    """An address with a line break (stored before addresses were checked) once stopped the
    whole delivery with a traceback, and the message came back every run without an attempt
    counted. Now it is one failed attempt, and the next message still goes out."""
    with unit_of_work(factory) as s:
        for recipient in ("ewa@clinic.example\r\nBcc: outsider@evil.example", "jan@clinic.ex"):
            s.add(
                OutboxMessage(recipient=recipient, subject="Notice", body="Hello", purpose="test")
            )
    report = mail.deliver_pending(factory, _settings(database_url, inbox.port))
    assert (report.sent, report.failed) == (1, 1)
    broken, good = _outbox(factory)
    assert broken.attempts == 1 and broken.sent_at is None
    assert "cannot be built" in (broken.last_error or "")
    assert good.sent_at is not None
    assert [to for to, _ in inbox.received] == [["jan@clinic.ex"]]


@pytest.mark.parametrize(
    "email", ["ewa@clinic.example\r\nBcc: outsider@evil.example", "no-at-sign", "a@b"]
)
def test_a_staff_account_with_an_address_that_is_not_one_is_refused(app, staff, factory, email):
    admin = sign_in(app, "admin")
    r = admin.post(
        "/api/v1/users",
        json={
            "username": "ewa.nowak",
            "full_name": "Ewa Nowak",
            "role": "nurse",
            "password": "a-quiet-lighthouse-by-the-fjord-7",
            "email": email,
        },
    )
    assert r.status_code == 422, r.text
    assert "email address" in r.json()["errors"]["email"]
    with factory() as s:
        assert s.scalar(select(func.count(User.id)).where(User.username == "ewa.nowak")) == 0
