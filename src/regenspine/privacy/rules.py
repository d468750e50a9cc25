"""Retention rules (pure): how long records must be kept before they may be anonymised.

Polish law (Ustawa o prawach pacjenta i Rzeczniku Praw Pacjenta, art. 29 ust. 1): medical
records are kept 20 years from the end of the calendar year of the last entry. Cell-product
traceability data (Directive 2006/86/EC art. 9(2); Directive 2004/23/EC art. 8(4)) are kept
at least 30 years after clinical use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from regenspine.errors import N_

MEDICAL_RECORD_YEARS = 20
TRACEABILITY_YEARS = 30


@dataclass(frozen=True)
class Retention:
    last_entry: date
    cell_product_used: bool
    keep_until: date
    basis: str  # msgid naming the legal basis

    def allows_erasure(self, today: date) -> bool:
        return today > self.keep_until


def retention_for(last_entry: date, cell_product_used: bool) -> Retention:
    """The period runs from the end of the calendar year of the last entry."""
    years = TRACEABILITY_YEARS if cell_product_used else MEDICAL_RECORD_YEARS
    basis = (
        N_("cell-product traceability: 30 years (Directive 2006/86/EC art. 9(2))")
        if cell_product_used
        else N_(
            "medical records: 20 years from the end of the year of the last entry "
            "(Polish Patients' Rights Act, art. 29)"
        )
    )
    return Retention(last_entry, cell_product_used, date(last_entry.year + years, 12, 31), basis)
