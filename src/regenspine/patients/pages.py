"""Patient pages: list and search, registration, the chart, and amendments."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from regenspine.auth.permissions import Permission
from regenspine.errors import N_, DomainError, InvalidInput, PermissionDenied
from regenspine.labels import code128_data_uri
from regenspine.patients import service
from regenspine.patients.rules import (
    FIELD_LABELS,
    IDENTIFIER_LABELS,
    PATIENT_FIELDS,
    SEX_LABELS,
)
from regenspine.text import plain_number
from regenspine.web.boundary import refusable
from regenspine.web.openapi import RowId
from regenspine.web.security import Db, PageActor, PostedForm
from regenspine.web.templating import render

router = APIRouter()


def _form_context() -> dict[str, object]:
    return {
        "labels": FIELD_LABELS,
        "error_labels": FIELD_LABELS | {"reason": N_("Reason for the correction")},
        "sex_labels": SEX_LABELS,
        "id_labels": IDENTIFIER_LABELS,
    }


def _posted_fields(form: FormData) -> dict[str, str]:
    return {k: str(form.get(k) or "") for k in PATIENT_FIELDS}


@router.get("/patients", response_class=HTMLResponse)
def patient_list(
    request: Request,
    db: Db,
    actor: PageActor,
    q: Annotated[str, Query(max_length=100)] = "",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    """The patient list. A search typed on the page is sent with POST (patient_search); a `q`
    here still works, for a link made elsewhere, but no page of the clinic makes one."""
    return _search_answer(request, service.search_patients(db, actor, q, page), q)


@router.post("/patients", response_class=HTMLResponse)
def patient_search(
    request: Request,
    db: Db,
    actor: PageActor,
    q: Annotated[str, Form(max_length=100)] = "",
    page: Annotated[int, Form(ge=1, le=10_000)] = 1,
) -> Response:
    """The search box and its pages. What is searched for (a name, a PESEL, a date of birth)
    travels in the request body, so it stays out of the address bar, the browser's history
    and every proxy's log (ASVS V14.2.1)."""
    return _search_answer(request, service.search_patients(db, actor, q, page), q)


def _search_answer(request: Request, result: service.PatientPage, q: str) -> Response:
    template = (
        "patients/_partials/results.html"
        if request.headers.get("hx-request")
        else "patients/list.html"
    )
    return render(request, template, {"result": result, "q": q})


@router.get("/patients/new", response_class=HTMLResponse)
def new_patient(request: Request, actor: PageActor) -> Response:
    actor.require(Permission.PATIENT_CREATE)
    return render(
        request,
        "patients/register.html",
        _form_context()
        | {"values": {"id_type": "pesel", "preferred_language": "pl", "country": "PL"}},
    )


@router.post("/patients/new", response_class=HTMLResponse)
def register_patient(request: Request, db: Db, actor: PageActor, form: PostedForm) -> Response:
    values = _posted_fields(form)
    confirm = form.get("confirm_not_duplicate") == "yes"
    try:
        with refusable(db, actor):
            patient = service.register_patient(db, actor, values, confirm_not_duplicate=confirm)
    except InvalidInput as exc:
        return render(
            request,
            "patients/register.html",
            _form_context() | {"values": values, "errors": exc.field_errors},
            status=422,
        )
    except service.PossibleDuplicate as exc:
        return render(
            request,
            "patients/register.html",
            _form_context() | {"values": values, "duplicate": exc},
            status=409,
        )
    return RedirectResponse(f"/patients/{patient.id}?registered=1", status_code=303)


@router.get("/patients/{patient_id}", response_class=HTMLResponse)
def chart(request: Request, db: Db, actor: PageActor, patient_id: RowId) -> Response:
    patient = service.get_patient(db, actor, patient_id)
    return render(
        request,
        "patients/chart.html",
        _form_context()
        | {
            "patient": patient,
            "history": service.amendment_history(db, actor, patient),
            "care_team": service.care_team(db, patient),
            "barcode": code128_data_uri(patient.mrn),
            "registered": request.query_params.get("registered") == "1",
            "amended": request.query_params.get("amended") == "1",
        },
    )


@router.get("/patients/{patient_id}/amend", response_class=HTMLResponse)
def amend_form(request: Request, db: Db, actor: PageActor, patient_id: RowId) -> Response:
    actor.require(Permission.PATIENT_AMEND)
    patient = service.get_patient(db, actor, patient_id, purpose="read_for_amendment")
    return render(
        request,
        "patients/amend.html",
        _form_context()
        | {
            "patient": patient,
            "values": service.current_values(patient),
            "version": patient.version,
        },
    )


@router.post("/patients/{patient_id}/amend", response_class=HTMLResponse)
def amend(
    request: Request, db: Db, actor: PageActor, patient_id: RowId, form: PostedForm
) -> Response:
    values = _posted_fields(form)
    reason = str(form.get("reason") or "")
    version_raw = str(form.get("version") or "")
    version = int(version_raw) if plain_number(version_raw) else None
    try:
        with refusable(db, actor):
            service.amend_patient(db, actor, patient_id, values, reason, version)
    except PermissionDenied:
        raise  # the error page; never the form with the record to someone refused
    except DomainError as exc:
        errors = exc.field_errors if isinstance(exc, InvalidInput) else {"_form": exc.message}
        patient = service.get_patient(db, actor, patient_id, purpose="read_for_amendment")
        return render(
            request,
            "patients/amend.html",
            _form_context()
            | {
                "patient": patient,
                "values": values,
                "reason": reason,
                "errors": errors,
                "version": version or patient.version,
            },
            status=exc.status,
        )
    return RedirectResponse(f"/patients/{patient_id}?amended=1", status_code=303)
