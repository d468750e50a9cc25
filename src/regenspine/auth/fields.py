"""Field-level access: which stored free text is clinical, and who may read it (pure, no I/O).

Structured facts (states, dates, who acted, which rule fired, which red-flag item was positive)
are what an auditor checks the process with. Free text written about the patient's health or
circumstances is not needed for that and stays with the clinical roles: a caller without
``Permission.CLINICAL_TEXT_READ`` is told that a text exists and was withheld, never what it
says. Every field named here is withheld on every route, page and document; the access-matrix
tests store a marker in each one and look for it in everything an auditor can open.
"""

from __future__ import annotations

from collections.abc import Mapping

from regenspine.auth.actor import Actor
from regenspine.auth.permissions import Permission
from regenspine.errors import N_

# entity -> its columns that hold clinical free text
CLINICAL_FREE_TEXT: Mapping[str, frozenset[str]] = {
    "consultation": frozenset(
        {"presenting_complaint", "prior_treatments", "medications", "change_reason"}
    ),
    "episode_event": frozenset({"reason"}),
    "eligibility_decision": frozenset({"override_justification"}),
    "red_flag_screening": frozenset({"clearance_note"}),
    "consent": frozenset({"withdrawn_reason"}),
}

WITHHELD_DESCRIPTION = (
    "Fields that hold clinical free text the caller's role may not read; they are sent as null."
)
WITHHELD = N_("withheld: clinical free text is not shown to your role")


def may_read_clinical_text(actor: Actor) -> bool:
    return actor.can(Permission.CLINICAL_TEXT_READ)


def clinical_text(actor: Actor, entity: str, field: str, value: str | None) -> str | None:
    """``value`` for a caller who may read it; None (withheld) for anyone else.

    The (entity, field) pair must be declared above, so a new free-text field is a
    deliberate decision, not an accident.
    """
    if field not in CLINICAL_FREE_TEXT.get(entity, frozenset()):
        raise KeyError(f"{entity}.{field} is not declared as clinical free text")
    if value is None or may_read_clinical_text(actor):
        return value
    return None


def withheld_fields(actor: Actor, present: Mapping[str, str | None]) -> list[str]:
    """The names (``entity.field``) in ``present`` that hold text the caller may not see."""
    if may_read_clinical_text(actor):
        return []
    return sorted(name for name, value in present.items() if value)
