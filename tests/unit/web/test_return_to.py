"""The address a browser is sent back to after sign-in stays on this site (ASVS 5.0 V5.1.5)."""

from __future__ import annotations

from urllib.parse import urljoin

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regenspine.auth.permissions import ROLE_PERMISSIONS, Role
from regenspine.web.return_to import (
    DEFAULT,
    START_PAGES,
    landing,
    safe_return_path,
    sign_in_address,
    start_page,
)

CLINIC = "https://clinic.example/login"
# Addresses that start with one "/" as text but that a browser reads as another site: it
# drops tabs and line breaks anywhere and reads a backslash as a slash.
ATTACKS = [
    "//evil.example/phish",
    "/\t/x//evil.example/",
    "/\n/evil.example",
    "/\r/evil.example",
    "/\\evil.example",
    "\\/evil.example",
    "https://evil.example/",
    "javascript:alert(1)",
    " //evil.example",
    "/\x00/evil.example",
]


def _as_a_browser_reads_it(path: str) -> str:
    """WHATWG URL parsing, as far as it matters here: tabs and line breaks removed,
    backslashes read as slashes, leading and trailing C0 controls and spaces dropped."""
    cleaned = "".join(c for c in path if c not in "\t\n\r").replace("\\", "/")
    return urljoin(CLINIC, cleaned.strip("".join(map(chr, range(0x21)))))


@pytest.mark.parametrize("target", ATTACKS)
def test_an_address_a_browser_would_read_as_another_site_goes_to_the_default_page(target):
    assert safe_return_path(target) == DEFAULT


@pytest.mark.parametrize(
    "target", ["/patients/12", "/patients?q=Nowak&page=2", "/episodes/3/assess", "/audit"]
)
def test_a_path_of_this_site_is_kept_with_its_query(target):
    assert safe_return_path(target) == target


@given(st.text())
def test_whatever_is_asked_the_browser_stays_on_the_clinics_site(target):
    path = safe_return_path(target)
    assert path.startswith("/") and not path.startswith("//")
    assert _as_a_browser_reads_it(path).startswith("https://clinic.example/")


@given(st.text())
def test_the_sign_in_address_is_one_parameter_a_header_can_carry(path):
    address = sign_in_address("/login", path)
    address.encode("latin-1")  # a header value: no letters outside Latin-1
    assert address.startswith("/login?next=/") and address.count("&") == 0


@pytest.mark.parametrize(
    ("role", "page"),
    [
        (Role.NURSE, "/patients"),
        (Role.DOCTOR, "/patients"),
        (Role.AUDITOR, "/patients"),
        (Role.ADMIN, "/audit"),
    ],
)
def test_each_role_starts_on_a_page_it_may_open(role, page):
    can = ROLE_PERMISSIONS[role].__contains__
    assert start_page(can) == page
    assert landing(None, can) == page
    assert landing("/account", can) == "/account"


def test_every_role_starts_on_a_page_its_permissions_allow():
    for role, permissions in ROLE_PERMISSIONS.items():
        page = start_page(permissions.__contains__)
        needed = {path: permission for permission, path in START_PAGES}.get(page)
        assert needed is None or needed in permissions, role
