"""Read-only API over the condition catalogue (versioned reference data)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from regenspine.auth.permissions import Permission
from regenspine.catalog.conditions import get_catalogue
from regenspine.errors import N_, Message, NotFound
from regenspine.web.openapi import responses
from regenspine.web.security import ApiActor

router = APIRouter(prefix="/catalog", tags=["catalogue"])
REFUSALS = responses(401, 403)


@router.get("/conditions", responses=REFUSALS)
def conditions(actor: ApiActor) -> dict[str, Any]:
    actor.require(Permission.CATALOG_READ)
    catalogue = get_catalogue()
    return {
        "version": catalogue.version,
        "conditions": [c.model_dump(mode="json") for c in catalogue.conditions],
    }


@router.get("/conditions/{code}", responses=REFUSALS | responses(404))
def condition(code: str, actor: ApiActor) -> dict[str, Any]:
    actor.require(Permission.CATALOG_READ)
    try:
        found = get_catalogue().get(code)
    except KeyError as exc:
        raise NotFound(Message(N_("There is no condition with this code."))) from exc
    return found.model_dump(mode="json")
