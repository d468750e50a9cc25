"""Documented error responses for the OpenAPI description, shared by every JSON API module."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Path
from pydantic import BaseModel, Field

Responses = dict[int | str, dict[str, Any]]

PROBLEM_MEDIA_TYPE = "application/problem+json"
# The largest key SQLite's INTEGER and PostgreSQL's bigint hold: a larger number in a request
# is refused as invalid input instead of overflowing in the database driver.
ROW_ID_MAX = 2**63 - 1

RowId = Annotated[int, Path(ge=1, le=ROW_ID_MAX, description="Record id")]

_DESCRIPTIONS = {
    400: "Refused, or the body or the query string could not be read (problem+json says why)",
    401: "Not signed in, or the API token is invalid",
    403: "Not allowed for this role, or the CSRF token is wrong",
    404: "Not found",
    409: "Conflicts with the current state (e.g. a possible duplicate or a newer version)",
    422: "Invalid data; `errors` names each field and what is wrong",
    429: "Done too often; try again later",
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


class DuplicateCandidate(BaseModel):
    id: int
    mrn: str
    name: str
    reason: str


class Problem(BaseModel):
    """RFC 9457 problem details: the body of every error answer of the API."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    reference: str = Field(description="Quote it when reporting the problem.")
    errors: dict[str, str] | None = Field(
        default=None, description="Invalid input only: each field and what is wrong with it."
    )
    candidates: list[DuplicateCandidate] | None = Field(
        default=None, description="Possible duplicates only: the records that look the same."
    )


def responses(*codes: int) -> Responses:
    """The problem responses an endpoint can give besides its success response."""
    return {
        code: {
            "description": _DESCRIPTIONS[code],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": dict(_PROBLEM_REF)}},
        }
        for code in codes
    }


def _may_be_invalid(parameter: dict[str, Any]) -> bool:
    """Whether FastAPI can refuse this parameter: a required query or header parameter may be
    missing, and any parameter but a free string may be malformed."""
    if parameter.get("required") and parameter.get("in") != "path":
        return True
    schema = parameter.get("schema", {})
    return {k: v for k, v in schema.items() if k not in _ANNOTATIONS} != {"type": "string"}


_ANNOTATIONS = {"title", "description", "default", "examples"}


def _document_problems(schema: dict[str, Any]) -> None:
    """Adds what the app-wide handlers (web/problems.py) answer to the operations they cover:
    422 for a request that fails validation, 400 for a body that cannot be read. FastAPI's own
    422 entry describes a JSON body the app never sends (and is there even when no input can
    fail), so it is replaced, or dropped where nothing can be invalid."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(problem.pop("$defs", {}))
    components["Problem"] = problem
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            answers = operation.setdefault("responses", {})
            fastapi_default = "application/json" in answers.get("422", {}).get("content", {})
            if operation.get("requestBody") or any(
                _may_be_invalid(p) for p in operation.get("parameters", [])
            ):
                answers["422"] = responses(422)[422]
            elif fastapi_default:
                del answers["422"]
            # A body that cannot be read; a query string with control characters or broken
            # UTF-8 (web/middleware.py::RequestLimits).
            if operation.get("requestBody") or any(
                p.get("in") == "query" for p in operation.get("parameters", [])
            ):
                answers.setdefault("400", responses(400)[400])
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)


def install(app: FastAPI) -> None:
    """Makes /openapi.json describe the problem responses the app really gives."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _document_problems(generate())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
