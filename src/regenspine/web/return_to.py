"""Where a page may send the browser back to after sign-in: only a path of this site.

Pure: no I/O. An open redirect would let a phishing link borrow the clinic's own sign-in page
(ASVS 5.0 V5.1.5) to send a signed-in member of staff to a look-alike site.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote, urlencode, urlsplit

from regenspine.auth.permissions import Permission

DEFAULT = "/patients"

# The first page of each kind of work, in order: whoever reads patients starts at the patient
# list; an auditor or an administrator, who read none, at the audit log or the staff list.
START_PAGES: tuple[tuple[Permission, str], ...] = (
    (Permission.PATIENT_READ, "/patients"),
    (Permission.AUDIT_READ, "/audit"),
    (Permission.USER_MANAGE, "/admin/users"),
)


def start_page(can: Callable[[Permission], bool]) -> str:
    """Where a member of staff starts: never a page their role would refuse."""
    return next((path for permission, path in START_PAGES if can(permission)), "/account")


def landing(target: str | None, can: Callable[[Permission], bool]) -> str:
    """After sign-in: the page asked for, or (when none was) the role's start page."""
    path = safe_return_path(target)
    return start_page(can) if path == DEFAULT and not can(Permission.PATIENT_READ) else path


def safe_return_path(target: str | None) -> str:
    """`target` if it is a path of this site (with its query), else the default page.

    Browsers drop tabs and line breaks from an address and read a backslash as a slash, so
    "/<TAB>/evil.example" or "/\\evil.example" would reach another site although the text starts
    with a single "/": anything holding such characters is refused before it is parsed, and
    the value returned is checked again, not the value received."""
    if not target or any(ord(c) < 0x20 or c in "\\\x7f" for c in target):
        return DEFAULT
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return DEFAULT
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    if not path.startswith("/") or path.startswith("//"):
        return DEFAULT
    return path


def sign_in_address(page: str, path: str) -> str:
    """`page` (the sign-in or two-step page) with the path to return to, encoded: a path with
    a query of its own or letters outside ASCII stays one parameter and fits in a header."""
    return f"{page}?{urlencode({'next': safe_return_path(path)}, safe='/', quote_via=quote)}"
