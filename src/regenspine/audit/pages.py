"""The audit log page for auditors: filter, page through, export as CSV."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from regenspine.audit import service
from regenspine.audit.api import csv_response
from regenspine.auth.permissions import Permission
from regenspine.identifiers import mrn_from_scan
from regenspine.patients.models import Patient
from regenspine.patients.rules import parse_date
from regenspine.text import plain_number
from regenspine.web.security import Db, FromTheClinic, PageActor, page_requires
from regenspine.web.templating import render

router = APIRouter(dependencies=[page_requires(Permission.AUDIT_READ)])


def _filter(
    patient_id: str,
    username: str,
    action: str,
    date_from: str,
    date_to: str,
    find_mrn: Callable[[str], int | None] = lambda _: None,
) -> tuple[service.AuditFilter, dict[str, str]]:
    """The filter as understood; the patient is named by the record number on the chart (or
    by the internal number the log stores)."""
    errors: dict[str, str] = {}
    typed = patient_id.strip()
    pid = int(typed) if plain_number(typed) else None
    if typed and pid is None:
        mrn = mrn_from_scan(typed)
        pid = find_mrn(mrn) if mrn else None
        if pid is None:
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
    db: Db,
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

    def find_mrn(mrn: str) -> int | None:
        return db.scalar(select(Patient.id).where(Patient.mrn == mrn))

    flt, errors = _filter(**values, find_mrn=find_mrn)
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
    if form.errors:
        # A filter not understood shows nothing: the whole log would pass for the answer.
        result = service.AuditPage([], 0, 1, service.PAGE_SIZE)
    else:
        result = service.search(db, actor, form.flt, page)
    ids = {r.patient_id for r in result.records if r.patient_id is not None}
    mrns = dict(db.execute(select(Patient.id, Patient.mrn).where(Patient.id.in_(ids))).all())
    return render(
        request,
        "audit/log.html",
        {
            "result": result,
            "errors": form.errors,
            "values": form.values,
            "query": request.url.query,
            "mrns": mrns,
        },
        status=422 if form.errors else 200,
    )


@router.get("/audit/export.csv", dependencies=[FromTheClinic])
def audit_export(request: Request, db: Db, actor: PageActor, form: Form) -> Response:
    if form.errors:
        # A filter not understood would export the whole log: the page says what is wrong.
        return audit_log(request, db, actor, form)
    return csv_response(request, service.export_csv(db, actor, form.flt))
