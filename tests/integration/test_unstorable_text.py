"""Text no database can store (NUL, half a surrogate pair, other control characters) is refused
with words on both databases, and nothing of the change is written (ASVS 5.0 V1.3, V2.2.1).

PostgreSQL cannot hold NUL at all and answered such input with a server error; SQLite stored
it. Each domain checks its own fields; `db.py::_refuse_unstorable_text` is the net under all of
them, and `web/middleware.py::RequestLimits` refuses NUL and broken UTF-8 in a query string before
any search.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from regenspine.auth.permissions import Role
from regenspine.episodes.models import EpisodeEvent
from tests.conftest import open_lumbar_episode


@pytest.fixture
def episode(clients):
    return open_lumbar_episode(clients)[1]


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        ("Patient moved\x00away", "control characters"),
        ("Patient moved\x1baway", "control characters"),
        # The API's schema already refuses half a surrogate pair in a text field.
        ("Patient \ud83d moved away", "unicode string"),
    ],
)
def test_a_reason_with_an_unstorable_character_is_refused_and_the_episode_does_not_move(
    clients, episode, factory, reason, words
):
    with factory() as s:
        before = s.scalar(select(func.count(EpisodeEvent.id)))
    r = clients(Role.COORDINATOR).post(
        f"/api/v1/episodes/{episode}/steps",
        content=json.dumps({"step": "cancel", "target": "cancelled", "reason": reason}),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert words in r.json()["errors"]["reason"]
    assert clients(Role.COORDINATOR).get(f"/api/v1/episodes/{episode}").json()["state"] == (
        "referred"
    )
    with factory() as s:
        assert s.scalar(select(func.count(EpisodeEvent.id))) == before


@pytest.mark.parametrize("query", ["q=Kow%00alski", "q=%C3", "q=Kow%ED%A0%80alski"])
def test_a_search_with_nul_or_broken_text_is_refused_before_it_runs(clients, query):
    """NUL cannot travel in a PostgreSQL query (the driver refused: a server error); broken
    UTF-8 cannot be compared with anything. Scanners' STX/ETX framing still passes
    (`test_search_by_scanned_mrn.py`)."""
    api = clients(Role.DOCTOR).get(f"/api/v1/patients?{query}")
    assert api.status_code == 400, api.text
    assert "control character (NUL) or broken text" in api.json()["detail"]
    page = clients(Role.DOCTOR).get(f"/patients?{query}")
    assert page.status_code == 400
    assert "control character (NUL) or broken text" in page.text


def test_ordinary_text_with_tabs_line_breaks_and_emoji_still_passes(clients, episode):
    r = clients(Role.COORDINATOR).post(
        f"/api/v1/episodes/{episode}/steps",
        content=json.dumps(
            {"step": "cancel", "target": "cancelled", "reason": "Moved\tabroad\r\nto Łódź 🙂"}
        ),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 201, r.text
    assert clients(Role.DOCTOR).get("/api/v1/patients?q=%C5%81%C3%B3d%C5%BA").status_code == 200
