"""E-mails that tell a user their sign-in details changed (ASVS V6.3.7), in their language.

They carry no secret and no link: a message that could be forged into a phishing lure would do
more harm than good. They say what changed, when, and what to do if it was not expected.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from regenspine.auth.models import User
from regenspine.db import utcnow
from regenspine.errors import N_, Message
from regenspine.i18n import format_datetime, gettext_for
from regenspine.mail import service as mail

NOTICES: dict[str, tuple[str, str]] = {
    "password_changed": (
        N_("Your RegenSpine password was changed"),
        N_(
            "The password of your RegenSpine account %(username)s was changed on %(when)s. "
            "Your other signed-in browsers were signed out and your API tokens revoked."
        ),
    ),
    "mfa_enabled": (
        N_("Two-step sign-in was turned on for your RegenSpine account"),
        N_(
            "Two-step sign-in was turned on for your RegenSpine account %(username)s on "
            "%(when)s. Your other signed-in browsers were signed out and your API tokens revoked."
        ),
    ),
    "reset_two_step": (
        N_("Two-step sign-in was turned off for your RegenSpine account"),
        N_(
            "%(admin)s turned off two-step sign-in for your RegenSpine account %(username)s on "
            "%(when)s, giving this reason: %(reason)s. You were signed out everywhere and your API "
            "tokens were revoked. Set up two-step sign-in again after you sign in."
        ),
    ),
    "reset_api_tokens": (
        N_("Your RegenSpine API tokens were revoked"),
        N_(
            "%(admin)s revoked every API token of your RegenSpine account %(username)s on "
            "%(when)s, giving this reason: %(reason)s."
        ),
    ),
    "reset_sessions": (
        N_("Your RegenSpine browsers were signed out"),
        N_(
            "%(admin)s signed out every browser signed in to your RegenSpine account "
            "%(username)s on %(when)s, giving this reason: %(reason)s."
        ),
    ),
    "reset_password": (
        N_("Your RegenSpine password was reset"),
        N_(
            "%(admin)s reset the password of your RegenSpine account %(username)s on %(when)s, "
            "giving this reason: %(reason)s. You were signed out everywhere and your API tokens "
            "were revoked. Sign in with the one-time password the administrator gave you, in "
            "person or by telephone, and choose your own; this e-mail never contains it."
        ),
    ),
}
CLOSING = N_(
    "If you expected this, nothing more is needed. If you did not, tell the clinic's "
    "administrator at once: someone else may know your password."
)


def notify(session: Session, user: User, change: str, **params: str) -> bool:
    """Queues the notice of `change` to the user, in their language, in the caller's
    transaction; False when the account has no e-mail address."""
    if not user.email:
        return False
    subject, text = NOTICES[change]
    gettext = gettext_for(user.language)
    when = format_datetime(utcnow(), user.language)
    body = Message(text, username=user.username, when=when, **params).render(gettext)
    mail.queue(
        session,
        recipient=user.email,
        subject=gettext(subject),
        body=f"{body}\n\n{gettext(CLOSING)}\n",
        purpose=f"auth.{change}",
    )
    return True
