"""Text that can be stored: the characters no record may hold, on either database (pure).

PostgreSQL cannot store the NUL character at all, and neither database can store half of a
UTF-16 surrogate pair; the other C0 control characters (all but tab, line feed and carriage
return) are invisible in every page and PDF and only ever arrive by accident or on purpose.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from regenspine.errors import N_, InvalidInput, Message

# An address with one @, a dot in the domain and no white space (so no line break that could
# start a header of its own in a message).
EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
UNSTORABLE_MESSAGE = N_(
    "This text contains invisible control characters that cannot be stored. Type it again "
    "without them."
)


# What no query can even carry: NUL (PostgreSQL's driver refuses it before sending) and half a
# surrogate pair (what broken UTF-8 in an address decodes to). Other control characters may
# stand in a search: a barcode scanner frames a record number with STX and ETX.
UNSEARCHABLE = re.compile("[\x00\ud800-\udfff]")


# Invisible characters that change the order in which the text around them is shown: the
# bidirectional embeddings, overrides and isolates. "‮ikswolwoK naJ" shows as a name it is
# not, and a reason or a note could show its words in another order than they were written.
REORDERING = re.compile("[\u202a-\u202e\u2066-\u2069]")
REORDERING_MESSAGE = N_(
    "This text contains invisible characters that change the order in which it is shown. "
    "Type it again without them."
)


# Letters that show as nothing: the Hangul fillers are letters to Unicode (category Lo), so a
# name made of them passes every "has letters" check and is still blank on the page.
BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")


def has_blank_letters(text: str) -> bool:
    return any(c in BLANK_LETTERS for c in text)


def refuse_reordering(field: str, text: str) -> None:
    """Refuses clinical free text (a reason, a justification, a note) that holds such a
    character, naming the field."""
    if REORDERING.search(text):
        raise InvalidInput({field: Message(REORDERING_MESSAGE)})


def unstorable(value: object) -> bool:
    """Whether a value (text, or JSON made of lists, mappings and text) holds such a character."""
    if isinstance(value, str):
        return UNSTORABLE.search(value) is not None
    if isinstance(value, Mapping):
        return any(unstorable(k) or unstorable(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(unstorable(v) for v in value)
    return False


def plain_number(text: str, max_digits: int = 9) -> bool:
    """Whether text is a whole number written in ASCII digits only, short enough for int().

    `str.isdigit` alone also accepts '²' or '٣', on which int() fails or reads another number.
    """
    return 0 < len(text) <= max_digits and text.isascii() and text.isdigit()
