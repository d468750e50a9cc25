"""Episode pages: the panel on the patient chart, the episode page with its timeline, work lists."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile

from regenspine.auth.permissions import Permission, Role
from regenspine.catalog.conditions import get_catalogue
from regenspine.episodes import consent, documents, service
from regenspine.episodes.states import (
    DECISION_LABELS,
    RULE_OUTCOME_LABELS,
    STATE_LABELS,
    STEP_LABELS,
    EpisodeState,
    Step,
    allowed_steps,
)
from regenspine.errors import N_, DomainError, InvalidInput, Message
from regenspine.web.boundary import refusable
from regenspine.web.openapi import RowId
from regenspine.web.security import Db, PageActor, PostedForm, page_requires
from regenspine.web.templating import render, translate

router = APIRouter(dependencies=[page_requires(Permission.EPISODE_READ)])
FormStr = Annotated[str, Form()]

# Steps that other screens take with their own forms (consultation, eligibility, consent,
# procedure day); the episode page offers only the plain ones.
PLAIN_STEPS = frozenset(
    {Step.SCHEDULE, Step.START_FOLLOW_UP, Step.NEW_CYCLE, Step.CLOSE, Step.CANCEL}
)


ASSESSABLE = frozenset(
    s.value
    for s in (
        EpisodeState.REFERRED,
        EpisodeState.ASSESSED,
        EpisodeState.ELIGIBLE,
        EpisodeState.NOT_ELIGIBLE,
        EpisodeState.FOLLOW_UP,
    )
)


def _red_flag_text(language: str) -> Callable[[str], str]:
    from regenspine.eligibility.red_flags import get_red_flags

    items = get_red_flags()

    def text(item_id: str) -> str:
        try:
            return items.get(item_id).text(language)
        except KeyError:
            return item_id

    return text


def _conditions(language: str) -> list[tuple[str, str, list[str]]]:
    return [
        (c.code, c.label(language), [str(r) for r in c.regions]) for c in get_catalogue().conditions
    ]


@router.get("/patients/{patient_id}/episodes/panel", response_class=HTMLResponse)
def panel(request: Request, db: Db, actor: PageActor, patient_id: RowId) -> Response:
    # Recorded as the API's list of a patient's episodes is: the panel shows the same.
    service.patients.get_patient(db, actor, patient_id, purpose="read_episodes")
    episodes = service.episodes_of_patient(db, actor, patient_id)
    return render(
        request,
        "episodes/_partials/panel.html",
        {
            "patient_id": patient_id,
            "episodes": episodes,
            "timelines": service.timelines(db, [e.id for e in episodes]),
            "state_labels": STATE_LABELS,
            "conditions": _conditions(actor.language),
            "catalogue": get_catalogue(),
        },
    )


@router.post("/patients/{patient_id}/episodes", response_class=HTMLResponse)
def open_episode(
    request: Request,
    db: Db,
    actor: PageActor,
    patient_id: RowId,
    condition_code: FormStr = "",
    region: FormStr = "",
) -> Response:
    try:
        with refusable(db, actor):
            episode = service.open_episode(db, actor, patient_id, condition_code, region)
    except DomainError as exc:
        message = (
            next(iter(exc.field_errors.values())) if isinstance(exc, InvalidInput) else exc.message
        )
        return render(
            request,
            "error.html",
            {"status": exc.status, "message": translate(request, message)},
            status=exc.status,
        )
    return RedirectResponse(f"/episodes/{episode.id}", status_code=303)


def _episode_page(
    request: Request,
    db: Db,
    actor: PageActor,
    episode_id: RowId,
    error: list[Message] | None = None,
    status: int = 200,
    typed: Mapping[str, str] | None = None,
) -> Response:
    episode = service.get_episode(db, actor, episode_id)
    patient = db.get(service.patients.Patient, episode.patient_id)
    service.audit.record(
        db,
        actor,
        "episode.read",
        entity_type="episode",
        entity_id=episode.id,
        patient_id=episode.patient_id,
    )
    role = Role(actor.role) if actor.role else None
    steps = [
        t
        for t in allowed_steps(EpisodeState(episode.state))
        if t.step in PLAIN_STEPS
        and role in t.roles
        and service.preconditions_hold(db, episode, t.step, t.target)
    ]
    decision = service.latest_decision(db, episode)
    red_flag_text = _red_flag_text(actor.language)
    return render(
        request,
        "episodes/episode.html",
        {
            "episode": episode,
            "patient": patient,
            "events": service.timeline(db, episode),
            "state_labels": STATE_LABELS,
            "step_labels": STEP_LABELS,
            "decision_labels": DECISION_LABELS,
            "outcome_labels": RULE_OUTCOME_LABELS,
            "steps": steps,
            "condition": get_catalogue().get(episode.condition_code),
            "decision": decision,
            # A decision taken before the newest assessment (one that found a red flag makes
            # none) no longer counts: the page says so instead of showing it as current.
            "decision_current": decision is not None
            and service.decided_on_latest_assessment(db, episode, decision),
            "consent": service.current_consent(db, episode),
            "red_flags": service.open_red_flags(db, episode),
            # What was typed into the form a refusal answered, to show it again.
            "typed": typed or {},
            # A refusal is shown at the form's POST address: the language switch returns here.
            "here": f"/episodes/{episode.id}",
            "red_flag_text": red_flag_text,
            # A red flag's step names the questions answered "yes" by their ids.
            "red_flag_texts": lambda ids: "; ".join(red_flag_text(i) for i in ids.split(", ")),
            "error": error,
            "can_assess": actor.can(Permission.CONSULTATION_RECORD) and episode.state in ASSESSABLE,
        },
        status=status,
    )


def episode_page_with_error(
    request: Request,
    db: Db,
    actor: PageActor,
    episode_id: RowId,
    exc: DomainError,
    typed: Mapping[str, str] | None = None,
) -> Response:
    messages = list(exc.field_errors.values()) if isinstance(exc, InvalidInput) else [exc.message]
    return _episode_page(
        request, db, actor, episode_id, error=messages, status=exc.status, typed=typed
    )


def act_on_episode(
    request: Request,
    db: Db,
    actor: PageActor,
    episode_id: RowId,
    action: Callable[[], object],
    typed: Mapping[str, str] | None = None,
) -> Response:
    """Runs one use case for the episode page: back to the page, or the page with the refusal
    and what was typed into the form, so that nothing has to be typed again."""
    try:
        with refusable(db, actor):
            action()
    except DomainError as exc:
        return episode_page_with_error(request, db, actor, episode_id, exc, typed)
    return RedirectResponse(f"/episodes/{episode_id}", status_code=303)


@router.get("/episodes/{episode_id}", response_class=HTMLResponse)
def episode_page(request: Request, db: Db, actor: PageActor, episode_id: RowId) -> Response:
    return _episode_page(request, db, actor, episode_id)


@router.post("/episodes/{episode_id}/steps", response_class=HTMLResponse)
def take_step(
    request: Request,
    db: Db,
    actor: PageActor,
    episode_id: RowId,
    step: FormStr = "",
    target: FormStr = "",
    reason: FormStr = "",
    expected_state: FormStr = "",
) -> Response:
    try:
        chosen, to = Step(step), EpisodeState(target)
        seen = EpisodeState(expected_state) if expected_state else None
    except ValueError:
        return _episode_page(
            request,
            db,
            actor,
            episode_id,
            status=422,
            error=[Message(N_("Choose one of the offered steps."))],
        )
    return act_on_episode(
        request,
        db,
        actor,
        episode_id,
        lambda: service.take_step(
            db, actor, episode_id, chosen, to, reason=reason, expected_state=seen
        ),
        typed={"step": step, "reason": reason},
    )


@router.post("/episodes/{episode_id}/consent", response_class=HTMLResponse)
def record_consent(
    request: Request, db: Db, actor: PageActor, episode_id: RowId, form: PostedForm
) -> Response:
    upload = form.get("scan")
    scan = upload.file.read(consent.MAX_SCAN_BYTES + 1) if isinstance(upload, UploadFile) else None
    return act_on_episode(
        request,
        db,
        actor,
        episode_id,
        lambda: consent.record_consent(
            db,
            actor,
            episode_id,
            method=str(form.get("method") or ""),
            signed_name=str(form.get("signed_name") or ""),
            confirmed=form.get("confirmed") == "yes",
            language=str(form.get("language") or actor.language),
            scan=scan or None,
            scan_content_type=upload.content_type if isinstance(upload, UploadFile) else None,
        ),
        # The file is not kept: a browser cannot be given it back.
        typed={
            k: str(form.get(k) or "") for k in ("method", "signed_name", "confirmed", "language")
        },
    )


@router.post("/episodes/{episode_id}/consent/withdraw", response_class=HTMLResponse)
def withdraw_consent(
    request: Request, db: Db, actor: PageActor, episode_id: RowId, reason: FormStr = ""
) -> Response:
    return act_on_episode(
        request,
        db,
        actor,
        episode_id,
        lambda: consent.withdraw_consent(db, actor, episode_id, reason),
        typed={"withdraw_reason": reason},
    )


@router.get("/episodes/{episode_id}/consent-document", response_class=HTMLResponse)
def consent_document(
    request: Request, db: Db, actor: PageActor, episode_id: RowId, lang: str | None = None
) -> Response:
    """The consent text in the patient's language, with this episode's levels filled in."""
    from regenspine.consent.documents import current_document
    from regenspine.consultations.service import latest_consultation

    episode = service.get_episode(db, actor, episode_id)
    patient = db.get(service.patients.Patient, episode.patient_id)
    assert patient is not None
    language = lang if lang in ("pl", "en") else patient.preferred_language
    consultation = latest_consultation(db, episode.id)
    levels = list(consultation.target_levels) if consultation else []
    if not levels:
        return _episode_page(
            request,
            db,
            actor,
            episode_id,
            status=409,
            error=[Message(N_("Choose the target levels in the consultation first."))],
        )
    document = current_document()
    rendered = document.render(language, levels, episode.region)
    service.audit.record(
        db,
        actor,
        "consent.document_shown",
        entity_type="episode",
        entity_id=episode.id,
        patient_id=episode.patient_id,
        detail={"version": document.version, "language": language},
    )
    return render(
        request,
        "episodes/consent_document.html",
        {"doc": rendered, "episode": episode, "patient": patient},
    )


def _pdf(content: bytes, name: str) -> Response:
    return Response(
        content,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{name}"'},
    )


@router.get("/episodes/{episode_id}/urgent-referral.pdf")
def urgent_referral_pdf(db: Db, actor: PageActor, episode_id: RowId) -> Response:
    pdf = documents.urgent_referral_letter(db, actor, episode_id, actor.language)
    return _pdf(pdf, f"urgent-referral-{episode_id}.pdf")


@router.get("/episodes/{episode_id}/consent.pdf")
def consent_pdf(db: Db, actor: PageActor, episode_id: RowId) -> Response:
    return _pdf(documents.signed_consent(db, actor, episode_id), f"consent-{episode_id}.pdf")


@router.get("/worklist", response_class=HTMLResponse)
def work_list(request: Request, db: Db, actor: PageActor) -> Response:
    items = service.work_list(db, actor)
    return render(request, "episodes/worklist.html", {"items": items, "state_labels": STATE_LABELS})
