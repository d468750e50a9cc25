"""Documented error responses for the OpenAPI description, shared by every JSON API module."""

from __future__ import annotations

from typing import Any

Responses = dict[int | str, dict[str, Any]]

_DESCRIPTIONS = {
    400: "Refused (problem+json says why)",
    401: "Not signed in, or the API token is invalid",
    403: "Not allowed for this role, or the CSRF token is wrong",
    404: "Not found",
    409: "Conflicts with the current state (e.g. a possible duplicate or a newer version)",
    422: "Invalid data; `errors` names each field and what is wrong",
}


def responses(*codes: int) -> Responses:
    """The problem responses an endpoint can give besides its success response."""
    return {
        code: {"description": _DESCRIPTIONS[code], "content": {"application/problem+json": {}}}
        for code in codes
    }
