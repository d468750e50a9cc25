"""Patients, the history of corrections to their records, and who is on their care team."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from regenspine.db import Base, UTCDateTime, utcnow


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (
        # Name search is by prefix. On PostgreSQL the pattern operator class lets `LIKE 'abc%'`
        # use the index whatever the database's collation; SQLite searches a range of the plain
        # index (see patients.service.name_starts_with).
        Index(
            "ix_patients_family_name_norm",
            "family_name_norm",
            postgresql_ops={"family_name_norm": "varchar_pattern_ops"},
        ),
        Index(
            "ix_patients_given_name_norm",
            "given_name_norm",
            postgresql_ops={"given_name_norm": "varchar_pattern_ops"},
        ),
        Index("ix_patients_date_of_birth", "date_of_birth"),
        Index("ix_patients_national_id", "national_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mrn: Mapped[str] = mapped_column(String(16), unique=True)
    given_name: Mapped[str] = mapped_column(String(100))
    family_name: Mapped[str] = mapped_column(String(100))
    given_name_norm: Mapped[str] = mapped_column(String(100))
    family_name_norm: Mapped[str] = mapped_column(String(100))
    date_of_birth: Mapped[date] = mapped_column(Date)
    sex: Mapped[str] = mapped_column(String(10))
    id_type: Mapped[str] = mapped_column(String(12))
    national_id: Mapped[str | None] = mapped_column(String(20))
    id_country: Mapped[str | None] = mapped_column(String(2))
    phone: Mapped[str | None] = mapped_column(String(30))
    email: Mapped[str | None] = mapped_column(String(254))
    preferred_language: Mapped[str] = mapped_column(String(5))
    address: Mapped[str | None] = mapped_column(String(200))
    postal_code: Mapped[str | None] = mapped_column(String(12))
    city: Mapped[str | None] = mapped_column(String(200))
    country: Mapped[str | None] = mapped_column(String(2))
    emergency_contact_name: Mapped[str | None] = mapped_column(String(200))
    emergency_contact_phone: Mapped[str | None] = mapped_column(String(30))
    # Set when registration went ahead although a similar patient existed (name + birth date).
    possible_duplicate_of: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    registered_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    version: Mapped[int] = mapped_column(Integer, default=1)

    @property
    def display_name(self) -> str:
        return f"{self.family_name.upper()}, {self.given_name}"


class PatientAmendment(Base):
    """One corrected field: the value before, the value after, why, who and when."""

    __tablename__ = "patient_amendments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    field: Mapped[str] = mapped_column(String(40))
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    amended_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    amended_by_name: Mapped[str] = mapped_column(String(200))
    amended_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CareTeamMember(Base):
    __tablename__ = "care_team_members"
    __table_args__ = (UniqueConstraint("patient_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
