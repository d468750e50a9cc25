"""The doctor's assessment page (consultation + red-flag screening), override and clearance."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from regenspine.auth.permissions import Permission
from regenspine.catalog.conditions import get_catalogue, levels_for_region
from regenspine.consultations.rules import HERNIATION, MODIC, SIDES, STENOSIS
from regenspine.consultations.service import latest_consultation
from regenspine.eligibility import service
from regenspine.eligibility.red_flags import items_for_region
from regenspine.episodes import service as episodes
from regenspine.episodes.pages import act_on_episode
from regenspine.errors import DomainError, InvalidInput, PermissionDenied
from regenspine.web.boundary import refusable
from regenspine.web.openapi import RowId
from regenspine.web.security import Db, PageActor, PostedForm, page_requires
from regenspine.web.templating import render

router = APIRouter(dependencies=[page_requires(Permission.EPISODE_READ)])
FormStr = Annotated[str, Form()]
DIAGNOSIS_ROWS = 3
FLAGS = (
    "anticoagulant",
    "history_cancer",
    "active_malignancy",
    "active_infection",
    "bleeding_disorder",
    "pregnancy",
    "immunosuppression",
)
TEXTS = (
    "presenting_complaint",
    "pain_weeks",
    "physiotherapy_weeks",
    "prior_treatments",
    "prior_fusion_levels",
    "medications",
    "bmi",
    "imaging_modality",
    "imaging_date",
)


def consultation_from_form(form: FormData, region: str) -> tuple[dict[str, Any], dict[str, bool]]:
    """Turns the flat form into the consultation and the red-flag answers the services take."""
    raw: dict[str, Any] = {k: str(form.get(k) or "") for k in TEXTS}
    for flag in FLAGS:
        raw[flag] = form.get(flag) == "yes"
    findings: dict[str, dict[str, Any]] = {}
    for level in levels_for_region(region):
        values = {
            k: str(form.get(f"lf.{level}.{k}") or "")
            for k in ("pfirrmann", "herniation", "modic", "stenosis", "disc_height_loss_percent")
        }
        fissure = form.get(f"lf.{level}.annular_fissure") == "yes"
        if any(v and v != "none" for v in values.values()) or fissure:
            findings[level] = values | {"annular_fissure": fissure}
    raw["level_findings"] = findings
    raw["diagnoses"] = [
        {
            "condition": str(form.get(f"dx.{n}.condition")),
            "levels": [str(v) for v in form.getlist(f"dx.{n}.levels")],
            "side": str(form.get(f"dx.{n}.side") or ""),
        }
        for n in range(DIAGNOSIS_ROWS)
        if form.get(f"dx.{n}.condition")
    ]
    raw["target_levels"] = [str(v) for v in form.getlist("target_levels")]
    answers: dict[str, bool] = {}
    for item in items_for_region(region):
        value = form.get(f"rf.{item.id}")
        if value in ("yes", "no"):
            answers[item.id] = value == "yes"
    return raw, answers


def _form_page(
    request: Request,
    db: Db,
    actor: PageActor,
    episode_id: RowId,
    values: dict[str, Any] | None = None,
    errors: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    episode = episodes.get_episode(db, actor, episode_id)
    patient = db.get(episodes.patients.Patient, episode.patient_id)
    # The form shows the whole consultation: a read of the record like the episode page.
    episodes.audit.record(
        db,
        actor,
        "consultation.read",
        entity_type="episode",
        entity_id=episode.id,
        patient_id=episode.patient_id,
    )
    previous = latest_consultation(db, episode.id)
    if values is None and previous is not None:
        values = {k: getattr(previous, k) for k in TEXTS + FLAGS}
        values |= {
            "level_findings": previous.level_findings,
            "diagnoses": previous.diagnoses,
            "target_levels": previous.target_levels,
            "prior_fusion_levels": ", ".join(previous.prior_fusion_levels or []),
        }
    catalogue = get_catalogue()
    return render(
        request,
        "eligibility/assess.html",
        {
            "episode": episode,
            "patient": patient,
            "values": values or {},
            "errors": errors or {},
            "levels": levels_for_region(episode.region),
            "red_flags": items_for_region(episode.region),
            "conditions": [
                c for c in catalogue.conditions if episode.region in [str(r) for r in c.regions]
            ],
            "herniation": HERNIATION,
            "modic": MODIC,
            "stenosis": STENOSIS,
            "sides": SIDES,
            "flags": FLAGS,
            "rows": range(DIAGNOSIS_ROWS),
            "previous": previous,
        },
        status=status,
    )


@router.get("/episodes/{episode_id}/assess", response_class=HTMLResponse)
def assess_form(request: Request, db: Db, actor: PageActor, episode_id: RowId) -> Response:
    actor.require(Permission.CONSULTATION_RECORD)
    return _form_page(request, db, actor, episode_id)


@router.post("/episodes/{episode_id}/assess", response_class=HTMLResponse)
def assess(
    request: Request, db: Db, actor: PageActor, episode_id: RowId, form: PostedForm
) -> Response:
    episode = episodes.get_episode(db, actor, episode_id)
    raw, answers = consultation_from_form(form, episode.region)
    try:
        with refusable(db, actor):
            service.assess(
                db,
                actor,
                episode_id,
                raw,
                answers,
                change_reason=str(form.get("change_reason") or "") or None,
            )
    except PermissionDenied:
        raise  # the error page; never the form with the record to someone refused
    except InvalidInput as exc:
        values = raw | {"prior_fusion_levels": raw["prior_fusion_levels"], "answers": answers}
        return _form_page(request, db, actor, episode_id, values, exc.field_errors, 422)
    except DomainError as exc:
        return _form_page(
            request,
            db,
            actor,
            episode_id,
            raw | {"answers": answers},
            {"_form": exc.message},
            exc.status,
        )
    return RedirectResponse(f"/episodes/{episode_id}", status_code=303)


@router.post("/episodes/{episode_id}/override", response_class=HTMLResponse)
def override(
    request: Request, db: Db, actor: PageActor, episode_id: RowId, justification: FormStr = ""
) -> Response:
    return act_on_episode(
        request,
        db,
        actor,
        episode_id,
        lambda: service.override(db, actor, episode_id, justification),
        typed={"justification": justification},
    )


@router.post("/episodes/{episode_id}/clear-red-flag", response_class=HTMLResponse)
def clear_red_flag(
    request: Request, db: Db, actor: PageActor, episode_id: RowId, note: FormStr = ""
) -> Response:
    return act_on_episode(
        request,
        db,
        actor,
        episode_id,
        lambda: service.clear_red_flag(db, actor, episode_id, note),
        typed={"note": note},
    )
