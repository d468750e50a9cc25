"""API shapes for patients (PatientCreate / PatientAmend / PatientPublic)."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from regenspine.web.openapi import ROW_ID_MAX


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PatientFields(Strict):
    """Values arrive as text and are checked by the same rules as the registration form."""

    given_name: str = Field(max_length=300)
    family_name: str = Field(max_length=300)
    date_of_birth: str = Field(max_length=20, description="YYYY-MM-DD")
    sex: str = Field(max_length=20, description="female | male | other | unknown")
    id_type: str = Field(max_length=20, description="pesel | passport | id_card | none")
    national_id: str | None = Field(default=None, max_length=40)
    id_country: str | None = Field(default=None, max_length=10)
    phone: str | None = Field(default=None, max_length=300)
    email: str | None = Field(default=None, max_length=300)
    preferred_language: str | None = Field(default="pl", max_length=10)
    address: str | None = Field(default=None, max_length=300)
    postal_code: str | None = Field(default=None, max_length=300)
    city: str | None = Field(default=None, max_length=300)
    country: str | None = Field(default=None, max_length=10)
    emergency_contact_name: str | None = Field(default=None, max_length=300)
    emergency_contact_phone: str | None = Field(default=None, max_length=300)


class PatientCreate(PatientFields):
    confirm_not_duplicate: bool = Field(
        default=False,
        description="Register although a patient with the same name and birth date exists.",
    )


class PatientAmend(Strict):
    changes: dict[str, str | None] = Field(min_length=1, max_length=20)
    reason: str = Field(max_length=1000)
    expected_version: int | None = Field(default=None, ge=1)


class PatientPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    mrn: str
    given_name: str
    family_name: str
    date_of_birth: date
    sex: str
    id_type: str
    national_id: str | None
    id_country: str | None
    phone: str | None
    email: str | None
    preferred_language: str
    address: str | None
    postal_code: str | None
    city: str | None
    country: str | None
    emergency_contact_name: str | None
    emergency_contact_phone: str | None
    possible_duplicate_of: int | None
    registered_at: datetime
    version: int


class PatientSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    mrn: str
    given_name: str
    family_name: str
    date_of_birth: date
    sex: str
    national_id: str | None


class PatientSearchPage(BaseModel):
    items: list[PatientSummary]
    total: int
    page: int
    page_size: int
    pages: int


class AmendmentPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    version: int
    field: str
    old_value: str | None
    new_value: str | None
    reason: str
    amended_by_name: str
    amended_at: datetime


class CareTeamAdd(Strict):
    user_id: int = Field(ge=1, le=ROW_ID_MAX)
