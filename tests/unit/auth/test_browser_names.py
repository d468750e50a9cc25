"""The names staff see for their signed-in browsers (auth/rules.py, describe_browser)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regenspine.auth.rules import _BROWSERS, _SYSTEMS, describe_browser

BROWSERS = {""} | {name for _, name in _BROWSERS}
SYSTEMS = {""} | {name for _, name in _SYSTEMS}

# Real User-Agent strings as these browsers send them.
AGENTS = [
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
        ("Edge", "Windows"),
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
        ("Firefox", "Windows"),
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/18.1 Safari/605.1.15",
        ("Safari", "macOS"),
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
        "like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
        ("Chrome", "iPhone"),
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.6778.81 Mobile Safari/537.36",
        ("Chrome", "Android"),
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36 OPR/115.0.0.0",
        ("Opera", "Linux"),
    ),
    ("curl/8.5.0", ("curl", "")),
    ("testclient", ("", "")),
    ("", ("", "")),
]


@pytest.mark.parametrize(("agent", "expected"), AGENTS)
def test_a_browser_is_named_by_what_it_really_is(agent: str, expected: tuple[str, str]) -> None:
    assert describe_browser(agent) == expected


@given(st.text(max_size=300))
def test_any_user_agent_gives_one_of_our_names_and_never_echoes_the_text(agent: str) -> None:
    # The stored User-Agent is whatever the client sent; the name shown is always one of ours.
    browser, system = describe_browser(agent)
    assert browser in BROWSERS
    assert system in SYSTEMS
