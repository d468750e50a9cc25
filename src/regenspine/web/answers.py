"""JSON answers built from an already validated model."""

from __future__ import annotations

from fastapi import Response
from pydantic import BaseModel


def model_json(model: BaseModel) -> Response:
    """The model serialised as the route's `response_model` documents it.

    For frequently used reads: a sync route that returns a model has FastAPI validate it a
    second time against `response_model`, in one more worker-thread hop. A model built with
    `model_validate` has already been validated, so it is serialised directly.
    """
    return Response(model.model_dump_json(), media_type="application/json")
