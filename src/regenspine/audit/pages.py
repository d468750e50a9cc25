"""The audit log page for auditors: filter, page through, export as CSV."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from regenspine.audit import service
from regenspine.audit.api import csv_response
from regenspine.auth.permissions import Permission
from regenspine.patients.rules import parse_date
from regenspine.text import plain_number
from regenspine.web.security import Db, FromTheClinic, PageActor, page_requires
from regenspine.web.templating import render

router = APIRouter(dependencies=[page_requires(Permission.AUDIT_READ)])


def _filter(
    patient_id: str, username: str, action: str, date_from: str, date_to: str
) -> tuple[service.AuditFilter, dict[str, str]]:
    errors: dict[str, str] = {}
    pid = int(patient_id) if plain_number(patient_id.strip()) else None
    if patient_id.strip() and pid is None:
        errors["patient_id"] = "patient"

    def as_date(value: str, key: str) -> date | None:
        if not value.strip():
            return None
        parsed = parse_date(value)
        if parsed is None:
            errors[key] = "date"
        return parsed

    flt = service.AuditFilter(
        patient_id=pid,
        username=username.strip() or None,
        action=action.strip() or None,
        date_from=as_date(date_from, "date_from"),
        date_to=as_date(date_to, "date_to"),
    )
    return flt, errors


Text = Annotated[str, Query(max_length=150)]


@dataclass(frozen=True)
class FilterForm:
    """The filter as typed (to show it back) and as understood (to query with)."""

    values: dict[str, str]
    flt: service.AuditFilter
    errors: dict[str, str]


def filter_form(
    patient_id: Text = "",
    username: Text = "",
    action: Text = "",
    date_from: Text = "",
    date_to: Text = "",
) -> FilterForm:
    values = {
        "patient_id": patient_id,
        "username": username,
        "action": action,
        "date_from": date_from,
        "date_to": date_to,
    }
    flt, errors = _filter(**values)
    return FilterForm(values, flt, errors)


Form = Annotated[FilterForm, Depends(filter_form)]


@router.get("/audit", response_class=HTMLResponse)
def audit_log(
    request: Request,
    db: Db,
    actor: PageActor,
    form: Form,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    result = service.search(db, actor, form.flt, page)
    return render(
        request,
        "audit/log.html",
        {
            "result": result,
            "errors": form.errors,
            "values": form.values,
            "query": request.url.query,
        },
    )


@router.get("/audit/export.csv", dependencies=[FromTheClinic])
def audit_export(request: Request, db: Db, actor: PageActor, form: Form) -> StreamingResponse:
    return csv_response(request, service.export_csv(db, actor, form.flt))
