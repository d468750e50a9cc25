"""Pure sign-in rules: the password policy, throttling and session lifetimes."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from regenspine.errors import N_, Message

PASSWORD_MIN_LENGTH = 12
PASSWORD_MAX_LENGTH = 128

# ASVS 5.0 V6.2.11: the documented list of context-specific words. Whoever knows where a
# password is used guesses these first: the product's name and the clinic's work, in English and
# Polish (compared without Polish letters, case or look-alike digits, so "Kręgosłup" and
# "kr3goslup" match "kregoslup"). A password built on them, with only a year, a number or a
# symbol of its own, is refused; one that merely contains a word inside a phrase of unrelated
# words is not. A clinic adds its own name, town and street (REGENSPINE_PASSWORD_CONTEXT_WORDS).
CONTEXT_WORDS: tuple[str, ...] = (
    "regenspine", "regen", "spine", "clinic", "klinika", "kregoslup", "kregi", "backpain",
    "marrow", "szpik", "kostny", "stemcell", "komorki", "macierzyste", "orthopaedic",
    "orthopedic", "ortopedia", "lumbar", "ledzwiowy", "cervical", "szyjny", "physio", "fizjo",
    "fizjoterapia", "oswestry", "injection", "iniekcja", "zastrzyk", "patient", "pacjent",
    "doctor", "lekarz", "nurse", "pielegniarka", "welcome", "witaj",
)  # fmt: skip

# One character for one, so positions in the folded text are positions in the password.
_FOLD = str.maketrans(
    "ąćęłńóśźżáéíúý013457@$",
    "acelnoszzaeiuyoieastas",
)


@lru_cache(maxsize=1)
def _common_passwords() -> frozenset[str]:
    # zxcvbn ships the 30,000 most frequent passwords from public breach corpora.
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(p.lower() for p in FREQUENCY_LISTS["passwords"])


def common_password_count() -> int:
    return len(_common_passwords())


@dataclass(frozen=True)
class PasswordStrength:
    score: int  # 0..4 as zxcvbn reports it
    problems: tuple[Message, ...]

    @property
    def acceptable(self) -> bool:
        return not self.problems


def fold(text: str) -> str:
    """Lower case, without Polish letters or look-alike digits and symbols, one character for
    one: a character whose lower case is longer ("İ" is "i" and a combining dot) keeps its
    first. Compose decomposed letters first (NFC), or a "ę" typed as "e" and a combining ogonek
    would not match."""
    return "".join(c.lower()[:1] for c in text).translate(_FOLD)


def built_on_context_word(password: str, words: Sequence[str]) -> str | None:
    """The first context word the password is built on: with every listed word taken out,
    what is left would not be a good password on its own. None when it is not."""
    password = unicodedata.normalize("NFC", password)
    folded = fold(password)
    taken = [False] * len(password)
    found = None
    for word in words:
        word = fold(word.strip())
        if len(word) < 4:
            continue
        start = folded.find(word)
        while start != -1:
            found = found or word
            taken[start : start + len(word)] = [True] * len(word)
            start = folded.find(word, start + 1)
    if found is None:
        return None
    rest = "".join(c for c, gone in zip(password, taken, strict=True) if not gone)
    strong_rest = len(rest) >= PASSWORD_MIN_LENGTH and _zxcvbn_score(rest, ()) >= 3
    return None if strong_rest else found


def check_password(
    password: str, user_inputs: Sequence[str] = (), context_words: Sequence[str] = CONTEXT_WORDS
) -> PasswordStrength:
    """The policy: 12-128 characters, not a known breached password, not built on the user's
    names or on the clinic's context words, not easily guessed."""
    problems: list[Message] = []
    if len(password) < PASSWORD_MIN_LENGTH:
        problems.append(
            Message(
                N_("The password must have at least %(min)d characters."), min=PASSWORD_MIN_LENGTH
            )
        )
    if len(password) > PASSWORD_MAX_LENGTH:
        problems.append(
            Message(
                N_("The password may have at most %(max)d characters."), max=PASSWORD_MAX_LENGTH
            )
        )
        return PasswordStrength(0, tuple(problems))
    if password.lower() in _common_passwords() or password.strip().lower() in _common_passwords():
        problems.append(
            Message(N_("This password appears in lists of leaked passwords; choose another."))
        )
    lowered = password.lower()
    for value in user_inputs:
        if value and len(value) >= 3 and value.lower() in lowered:
            problems.append(Message(N_("The password must not contain your name or username.")))
            break
    if not problems:
        word = built_on_context_word(password, context_words)
        if word is not None:
            problems.append(
                Message(
                    N_(
                        'This password is built on "%(word)s", a word anyone would try here. '
                        "Add words of your own that have nothing to do with the clinic."
                    ),
                    word=word,
                )
            )
    score = _zxcvbn_score(password, [*user_inputs, *context_words]) if password else 0
    if score < 3 and not problems:
        problems.append(
            Message(
                N_(
                    "This password is too easy to guess. Use a longer phrase of several "
                    "unrelated words."
                )
            )
        )
    return PasswordStrength(score, tuple(problems))


def _zxcvbn_score(password: str, user_inputs: Sequence[str]) -> int:
    from zxcvbn import zxcvbn

    # zxcvbn refuses > 72 characters by default; the policy allows up to PASSWORD_MAX_LENGTH.
    result = zxcvbn(
        password, user_inputs=[u for u in user_inputs if u], max_length=PASSWORD_MAX_LENGTH
    )
    return int(result["score"])


@dataclass(frozen=True)
class ThrottlePolicy:
    max_failures_per_account: int = 5
    max_failures_per_ip: int = 30
    window: timedelta = timedelta(minutes=15)


def sign_in_locked(account_failures: int, ip_failures: int, policy: ThrottlePolicy) -> bool:
    """Counts are failures within the policy window since the last success."""
    return (
        account_failures >= policy.max_failures_per_account
        or ip_failures >= policy.max_failures_per_ip
    )


@dataclass(frozen=True)
class SessionLifetime:
    idle: timedelta = timedelta(minutes=30)
    absolute: timedelta = timedelta(hours=12)


def session_expired(
    created_at: datetime, last_seen_at: datetime, now: datetime, lifetime: SessionLifetime
) -> str | None:
    """Why the session has ended ("idle_timeout" or "absolute_timeout"), or None if valid."""
    if now - created_at >= lifetime.absolute:
        return "absolute_timeout"
    if now - last_seen_at >= lifetime.idle:
        return "idle_timeout"
    return None


# Most specific first: Edge and Opera also say "Chrome", Chrome also says "Safari", and
# Chrome on iOS says "CriOS". The tokens are those the browsers put in their User-Agent.
_BROWSERS = (
    ("Edg", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("FxiOS/", "Firefox"),
    ("CriOS/", "Chrome"),
    ("Chromium/", "Chromium"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
    ("curl/", "curl"),
)
_SYSTEMS = (
    ("Windows", "Windows"),
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("Android", "Android"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def describe_browser(user_agent: str) -> tuple[str, str]:
    """The browser and the operating system ("Firefox", "Windows") that staff can recognise in
    the list of their signed-in browsers; "" for a part the User-Agent names nothing known of.
    The page shows only these names, never the text the client sent."""
    browser = next((name for token, name in _BROWSERS if token in user_agent), "")
    system = next((name for token, name in _SYSTEMS if token in user_agent), "")
    return browser, system
