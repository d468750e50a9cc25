"""Finding a patient by scanning the barcode on a wristband or label, through the search API and
the patient list, on both databases: whatever the scanner adds around the number is ignored, and
a misread number finds nobody."""

from __future__ import annotations

from datetime import date

import pytest

from regenspine.auth.permissions import Role
from tests.conftest import person, valid_patient


@pytest.fixture
def two_patients(clients) -> list[dict]:
    coordinator = clients(Role.COORDINATOR)
    born = date(1980, 2, 29)
    made = [
        coordinator.post("/api/v1/patients", json=valid_patient()),
        coordinator.post(
            "/api/v1/patients",
            json=person(
                "Łucja",
                "Żółkiewska",
                born,
                17,
                "female",
            ),
        ),
    ]
    assert all(r.status_code == 201 for r in made), [r.text for r in made]
    return [r.json() for r in made]


@pytest.mark.parametrize(
    "decorate",
    [
        lambda mrn: mrn + "\r\n",  # Enter after the data (keyboard-wedge scanners)
        lambda mrn: "]C0" + mrn + "\n",  # ISO/IEC 15424 symbology identifier of Code 128
        lambda mrn: "\x02" + mrn + "\x03",  # STX/ETX framing
        lambda mrn: "\t" + mrn.lower() + "\x1d",  # lower case, Tab, group separator
    ],
    ids=["enter", "symbology-identifier", "stx-etx", "lower-case"],
)
def test_a_scanned_record_number_finds_exactly_that_patient(clients, two_patients, decorate):
    """ASVS 5.0 V2.2.1 (input normalised and validated against its format, check character)."""
    wanted = two_patients[1]
    scanned = decorate(wanted["mrn"])
    found = clients(Role.NURSE).get("/api/v1/patients", params={"q": scanned})
    assert found.status_code == 200, found.text
    assert [p["id"] for p in found.json()["items"]] == [wanted["id"]]
    page = clients(Role.NURSE).get("/patients", params={"q": scanned})
    assert page.status_code == 200 and f'href="/patients/{wanted["id"]}"' in page.text
    assert f'href="/patients/{two_patients[0]["id"]}"' not in page.text


def test_a_misread_record_number_finds_nobody(clients, two_patients):
    """ASVS 5.0 V2.2.1: a number whose check character does not match is no patient's."""
    mrn = two_patients[1]["mrn"]
    for position in range(len(mrn)):
        for replacement in "0A*":
            if replacement == mrn[position]:
                continue
            misread = mrn[:position] + replacement + mrn[position + 1 :]
            found = clients(Role.NURSE).get("/api/v1/patients", params={"q": "]C0" + misread})
            assert found.status_code == 200, found.text
            assert found.json()["total"] == 0, misread
