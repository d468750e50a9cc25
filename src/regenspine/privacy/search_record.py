"""What the audit log keeps of a patient search (pure): the kind of query and whom it found,
never the text typed, which is often a name or a PESEL and would stay in the chain for good."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from regenspine.identifiers import mrn_from_scan
from regenspine.patients.rules import parse_date

# Enough to tell an investigator whom a search showed; a page holds 25.
KEPT_PATIENT_IDS = 50


def query_kind(text: str) -> str:
    """Read in the order patients.service.search_statement reads a query."""
    if not text:
        return "none"
    compact = text.replace(" ", "").upper()
    if parse_date(text) is not None:
        return "date_of_birth"
    if compact.isdigit() and len(compact) == 11:
        return "pesel"
    if mrn_from_scan(text) is not None:
        return "mrn"
    if compact[:2].isalpha() and compact[2:8].isdigit() and len(compact) == 9:
        return "mrn_or_document"
    # Name words also match a document number typed whole; a digit means it was not a name.
    return "other" if any(c.isdigit() for c in text) else "name"


def search_detail(text: str, results: int, page: int, shown: Sequence[int]) -> dict[str, Any]:
    """The audit detail of one search: `shown` are the ids of the patients on the page."""
    return {
        "kind": query_kind(text),
        "length": len(text),
        "results": results,
        "page": page,
        "shown": len(shown),
        "patient_ids": list(shown[:KEPT_PATIENT_IDS]),
    }
