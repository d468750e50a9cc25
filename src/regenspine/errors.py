"""Domain exceptions shared by every domain; the web layer maps each kind once to an HTTP problem.

A message is an English msgid with named parameters, so the API can answer in English and the
pages can translate the same refusal into the user's language.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


def N_(msgid: str) -> str:
    """Marks a message for translation without translating it here."""
    return msgid


class Message:
    __slots__ = ("msgid", "params")

    def __init__(self, msgid: str, **params: Any) -> None:
        self.msgid = msgid
        self.params = params

    def render(self, gettext: Callable[[str], str] | None = None) -> str:
        template = gettext(self.msgid) if gettext else self.msgid
        if not self.params:
            return template
        # A parameter may itself be a message (e.g. "female"), translated in the same language.
        params = {
            k: v.render(gettext) if isinstance(v, Message) else v for k, v in self.params.items()
        }
        return template % params

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return f"Message({self.msgid!r}, {self.params!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Message) and self.msgid == other.msgid and self.params == other.params
        )

    def __hash__(self) -> int:
        return hash(self.msgid)


class Localised(Message):
    """Text from the clinic's reference data (a condition's name, say), which carries its own
    Polish and English rather than an entry in the gettext catalogue: shown in the language of
    the message around it."""

    __slots__ = ("texts",)

    def __init__(self, texts: Mapping[str, str]) -> None:
        super().__init__(texts.get("en", ""))
        self.texts = dict(texts)

    def render(self, gettext: Callable[[str], str] | None = None) -> str:
        return self.texts.get(_language_of(gettext), self.msgid)

    def __repr__(self) -> str:
        return f"Localised({self.texts!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Localised) and self.texts == other.texts

    def __hash__(self) -> int:
        return hash(self.msgid)


def _language_of(gettext: Callable[[str], str] | None) -> str:
    """The language of a catalogue's gettext (its "Language" header); English, the source
    language, has no catalogue."""
    catalogue = getattr(gettext, "__self__", None)
    info = catalogue.info() if catalogue is not None and hasattr(catalogue, "info") else {}
    return str(info.get("language") or "en")


class Listing(Message):
    """Several messages shown as one list, each translated like the message around it."""

    __slots__ = ("parts", "separator")

    def __init__(self, parts: Iterable[Message], separator: str = ", ") -> None:
        super().__init__("")
        self.parts = tuple(parts)
        self.separator = separator

    def render(self, gettext: Callable[[str], str] | None = None) -> str:
        return self.separator.join(part.render(gettext) for part in self.parts)

    def __repr__(self) -> str:
        return f"Listing({self.parts!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Listing) and self.parts == other.parts

    def __hash__(self) -> int:
        return hash(self.parts)


@dataclass(frozen=True)
class RefusalRecord:
    """A refusal worth an audit record; the boundary writes it after rolling the request back."""

    action: str
    entity_type: str = ""
    entity_id: str = ""
    patient_id: int | None = None
    detail: dict[str, str] = field(default_factory=dict)
    # What the refusal itself changes, kept with its record although the request's own work is
    # rolled back (e.g. signing out the browser that just locked the account).
    then: Callable[[Any], None] | None = None


class DomainError(Exception):
    """Base of every refusal a user can cause; status is the HTTP status it maps to."""

    status = 400
    title = "Request refused"

    def __init__(
        self, message: Message | str, *, refusal: RefusalRecord | None = None, **params: Any
    ) -> None:
        self.message = message if isinstance(message, Message) else Message(message, **params)
        self.refusal = refusal
        super().__init__(self.message.render())


class InvalidInput(DomainError):
    """Input failed validation; field_errors names each field and what is wrong with it."""

    status = 422
    title = "Some of the information is not valid"

    def __init__(
        self, field_errors: Mapping[str, Message], *, refusal: RefusalRecord | None = None
    ) -> None:
        self.field_errors = dict(field_errors)
        first = next(iter(self.field_errors.values()), Message(N_("The input is not valid.")))
        super().__init__(first, refusal=refusal)


class NotFound(DomainError):
    status = 404
    title = "Not found"


class PermissionDenied(DomainError):
    status = 403
    title = "Not allowed"


class NotAuthenticated(DomainError):
    status = 401
    title = "Sign-in required"


class Conflict(DomainError):
    status = 409
    title = "Conflict with the current state"


class TooManyAttempts(DomainError):
    status = 429
    title = "Too many attempts"
