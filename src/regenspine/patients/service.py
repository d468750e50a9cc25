"""Patient use cases: register, find, read a chart, amend; each audited in its transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, and_, bindparam, exists, func, or_, select
from sqlalchemy.orm import Session

from regenspine.audit import service as audit
from regenspine.auth.actor import Actor
from regenspine.auth.models import User
from regenspine.auth.permissions import CARE_TEAM_RESTRICTED_ROLES, Permission, Role
from regenspine.config import get_settings
from regenspine.errors import (
    N_,
    Conflict,
    DomainError,
    InvalidInput,
    Message,
    NotFound,
    PermissionDenied,
    RefusalRecord,
)
from regenspine.identifiers import format_mrn, mrn_from_scan
from regenspine.patients.models import CareTeamMember, Patient, PatientAmendment
from regenspine.patients.rules import (
    PATIENT_FIELDS,
    IdentifierType,
    PatientData,
    as_form_value,
    normalise_for_search,
    parse_date,
    validate_patient,
    validate_reason,
)
from regenspine.privacy.search_record import search_detail
from regenspine.sequences import lock_counter, next_values

PAGE_SIZE = 25


@dataclass(frozen=True)
class DuplicateCandidate:
    id: int
    mrn: str
    name: str
    date_of_birth: date
    reason: str


class PossibleDuplicate(Conflict):
    """Registration paused: similar patients exist; confirming registers anyway with a flag."""

    def __init__(self, message: Message, candidates: list[DuplicateCandidate]) -> None:
        super().__init__(message)
        self.candidates = candidates


def _today() -> date:
    return date.today()


def _apply(patient: Patient, data: PatientData) -> None:
    for key, value in data.as_dict().items():
        setattr(patient, key, value.value if hasattr(value, "value") else value)
    patient.given_name_norm = normalise_for_search(data.given_name)
    patient.family_name_norm = normalise_for_search(data.family_name)


def find_duplicates(
    session: Session, data: PatientData, exclude_id: int | None = None
) -> list[DuplicateCandidate]:
    same_id = (
        and_(Patient.id_type == data.id_type.value, Patient.national_id == data.national_id)
        if data.national_id
        else None
    )
    same_person = and_(
        Patient.family_name_norm == normalise_for_search(data.family_name),
        Patient.given_name_norm == normalise_for_search(data.given_name),
        Patient.date_of_birth == data.date_of_birth,
    )
    condition = or_(same_id, same_person) if same_id is not None else same_person
    query = select(Patient).where(condition)
    if exclude_id is not None:
        query = query.where(Patient.id != exclude_id)
    out = []
    for p in session.scalars(query.limit(10)):
        reason = (
            "same_identifier"
            if data.national_id and p.national_id == data.national_id
            else "same_name_and_birth_date"
        )
        out.append(DuplicateCandidate(p.id, p.mrn, p.display_name, p.date_of_birth, reason))
    return out


def register_patient(
    session: Session, actor: Actor, raw: dict[str, Any], *, confirm_not_duplicate: bool = False
) -> Patient:
    actor.require(Permission.PATIENT_CREATE)
    data = validate_patient(raw, _today())
    # Reserving the number locks the MRN counter until commit, so registrations take turns
    # from here: the duplicate check below sees every patient registered before this one.
    # Checked first, two desks registering the same person at once would both pass it.
    number = next_values(session, "mrn")[0]
    candidates = find_duplicates(session, data)
    if any(c.reason == "same_identifier" for c in candidates):
        match = next(c for c in candidates if c.reason == "same_identifier")
        raise PossibleDuplicate(
            Message(
                N_(
                    "A patient with this identifier is already registered (%(mrn)s, %(name)s). "
                    "Open that record instead of registering again."
                ),
                mrn=match.mrn,
                name=match.name,
            ),
            candidates,
        )
    if candidates and not confirm_not_duplicate:
        raise PossibleDuplicate(
            Message(
                N_(
                    "A patient with the same name and date of birth exists. Check that this is "
                    "a different person, then confirm to register."
                )
            ),
            candidates,
        )
    patient = Patient(
        mrn=format_mrn(get_settings().facility_code, number),
        registered_by=actor.user_id,
        possible_duplicate_of=candidates[0].id if candidates else None,
        version=1,
    )
    _apply(patient, data)
    session.add(patient)
    session.flush()
    audit.record(
        session,
        actor,
        "patient.create",
        entity_type="patient",
        entity_id=patient.id,
        patient_id=patient.id,
        detail={"mrn": patient.mrn, "possible_duplicate_of": patient.possible_duplicate_of},
    )
    return patient


NO_SUCH_PATIENT = Message(N_("There is no patient with this number."))


def is_care_team_bound(actor: Actor) -> bool:
    return actor.role in CARE_TEAM_RESTRICTED_ROLES and not actor.is_system


def _visible(query: Select[Any], actor: Actor) -> Select[Any]:
    if is_care_team_bound(actor):
        query = query.where(
            exists().where(
                CareTeamMember.patient_id == Patient.id, CareTeamMember.user_id == actor.user_id
            )
        )
    return query


CARE_TEAM_ONLY = N_("You can open only the records of patients on your care team.")


def _care_team_refusal(
    entity_type: str, entity_id: int, patient_id: int | None, reason: str
) -> PermissionDenied:
    return PermissionDenied(
        Message(CARE_TEAM_ONLY),
        refusal=RefusalRecord(
            action="patient.read",
            entity_type=entity_type,
            entity_id=str(entity_id),
            patient_id=patient_id,
            detail={"reason": reason},
        ),
    )


def ensure_patient_access(session: Session, actor: Actor, patient: Patient) -> None:
    """Record-level check: care-team-restricted roles see only their own patients."""
    if not is_care_team_bound(actor):
        return
    on_team = session.scalar(
        select(CareTeamMember.id).where(
            CareTeamMember.patient_id == patient.id, CareTeamMember.user_id == actor.user_id
        )
    )
    if on_team is None:
        raise _care_team_refusal("patient", patient.id, patient.id, "not_on_care_team")


def missing_record(actor: Actor, message: Message, entity_type: str, entity_id: int) -> DomainError:
    """What asking for a patient's record that does not exist raises. For a care-team-bound
    role it is the refusal a record of a patient not on their team gets, with the same status
    and words: a 404 for one and a 403 for the other would tell a physiotherapist which numbers
    belong to the clinic's patients (ASVS V8.2.2). The audit record still says which it was."""
    if is_care_team_bound(actor):
        return _care_team_refusal(entity_type, entity_id, None, "no_such_record")
    return NotFound(message)


# Built once: every chart read runs it (a third cheaper than Session.get's own query).
_PATIENT_BY_ID = select(Patient).where(Patient.id == bindparam("patient_id"))


def get_patient(
    session: Session, actor: Actor, patient_id: int, *, purpose: str = "read"
) -> Patient:
    """Loads one patient for the actor and records the access."""
    actor.require(Permission.PATIENT_READ)
    patient = session.execute(_PATIENT_BY_ID, {"patient_id": patient_id}).scalar_one_or_none()
    if patient is None:
        raise missing_record(actor, NO_SUCH_PATIENT, "patient", patient_id)
    ensure_patient_access(session, actor, patient)
    audit.record(
        session,
        actor,
        f"patient.{purpose}",
        entity_type="patient",
        entity_id=patient.id,
        patient_id=patient.id,
    )
    return patient


@dataclass(frozen=True)
class PatientPage:
    patients: list[Patient]
    total: int
    page: int
    page_size: int
    query: str

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


def name_starts_with(dialect: str, column: Any, prefix: str) -> ColumnElement[bool]:
    """`column` starts with `prefix`, in a form the column's index can answer.

    SQLite's LIKE ignores ASCII case, so it cannot use a plain index; a range of the index in
    byte order is the same prefix match. PostgreSQL's range follows the database's collation,
    in which a range is not a prefix; its LIKE uses the pattern-operator index instead."""
    after = _after(prefix) if prefix else None
    if dialect == "sqlite" and after is not None:
        return and_(column >= prefix, column < after)
    like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return cast("ColumnElement[bool]", column.like(like, escape="\\"))


def _after(prefix: str) -> str | None:
    """The first string after every string that starts with `prefix`, in code-point order
    (which UTF-8 byte order follows); None when there is none to write."""
    last = ord(prefix[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:  # surrogates cannot be stored
        last = 0xE000
    return None if last > 0x10FFFF else prefix[:-1] + chr(last)


def search_statement(dialect: str, actor: Actor, text: str) -> Select[Any]:
    """The patients the actor may see that match `text` (see search_patients), unordered."""
    stmt = _visible(select(Patient), actor)
    if not text:
        return stmt
    compact = text.replace(" ", "").upper()
    as_date = parse_date(text)
    scanned_mrn = mrn_from_scan(text)
    if as_date is not None:
        return stmt.where(Patient.date_of_birth == as_date)
    if compact.isdigit() and len(compact) == 11:
        return stmt.where(Patient.national_id == compact)
    if scanned_mrn is not None:
        return stmt.where(or_(Patient.mrn == scanned_mrn, Patient.national_id == compact))
    if compact[:2].isalpha() and compact[2:8].isdigit() and len(compact) == 9:
        return stmt.where(or_(Patient.mrn == compact, Patient.national_id == compact))
    # Commas too: the patient list shows a name as "FAMILY, Given", and staff type it so.
    for token in normalise_for_search(text).replace(",", " ").split()[:4]:
        stmt = stmt.where(
            or_(
                name_starts_with(dialect, Patient.family_name_norm, token),
                name_starts_with(dialect, Patient.given_name_norm, token),
                Patient.national_id == token.upper(),
            )
        )
    return stmt


def search_patients(
    session: Session, actor: Actor, query: str, page: int = 1, page_size: int = PAGE_SIZE
) -> PatientPage:
    """Finds patients by MRN, PESEL/document number, date of birth or (part of) the name."""
    actor.require(Permission.PATIENT_READ)
    text = query.strip()[:100]
    page = max(1, min(page, 10_000))
    stmt = search_statement(session.get_bind().dialect.name, actor, text)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(
        stmt.order_by(Patient.family_name_norm, Patient.given_name_norm, Patient.id)
        .offset((page - 1) * page_size)
        .limit(page_size)
    ).all()
    audit.record(
        session,
        actor,
        "patient.search",
        entity_type="patient",
        detail=search_detail(text, total, page, [p.id for p in rows]),
    )
    return PatientPage(list(rows), total, page, page_size, text)


def current_values(patient: Patient) -> dict[str, str]:
    return {k: as_form_value(getattr(patient, k)) for k in PATIENT_FIELDS}


def amend_patient(
    session: Session,
    actor: Actor,
    patient_id: int,
    changes: dict[str, Any],
    reason: str,
    expected_version: int | None = None,
) -> list[PatientAmendment]:
    """Corrects fields; the old values and the reason stay in the amendment history."""
    actor.require(Permission.PATIENT_AMEND)
    patient = session.get(Patient, patient_id, with_for_update=True)
    if patient is None:
        raise missing_record(actor, NO_SUCH_PATIENT, "patient", patient_id)
    ensure_patient_access(session, actor, patient)
    reason = validate_reason(reason)
    if expected_version is not None and expected_version != patient.version:
        raise Conflict(
            Message(
                N_(
                    "Someone else changed this record while you were editing. Reload it, "
                    "check the changes, and amend again."
                )
            )
        )
    unknown = set(changes) - set(PATIENT_FIELDS)
    if unknown:
        raise InvalidInput(
            {
                "_form": Message(
                    N_("Unknown fields were sent: %(fields)s."), fields=", ".join(sorted(unknown))
                )
            }
        )
    before = current_values(patient)
    merged = before | {k: ("" if v is None else str(v)) for k, v in changes.items()}
    data = validate_patient(merged, _today())
    after = {
        k: as_form_value(v.value if hasattr(v, "value") else v) for k, v in data.as_dict().items()
    }
    changed = [k for k in PATIENT_FIELDS if before[k] != after[k]]
    if not changed:
        raise InvalidInput({"_form": Message(N_("Nothing was changed."))})
    identifier_changed = {"id_type", "national_id", "id_country"} & set(changed)
    if identifier_changed and data.id_type != IdentifierType.NONE and data.national_id:
        # Same turn-taking as registration (see register_patient): the check below then sees
        # every registration or amendment that committed before this one.
        lock_counter(session, "mrn")
    if (
        data.id_type != IdentifierType.NONE
        and data.national_id
        and any(
            c.reason == "same_identifier"
            for c in find_duplicates(session, data, exclude_id=patient.id)
        )
    ):
        raise InvalidInput(
            {"national_id": Message(N_("Another patient is registered with this identifier."))}
        )
    user = session.get(User, actor.user_id) if actor.user_id else None
    patient.version += 1
    amendments = [
        PatientAmendment(
            patient_id=patient.id,
            version=patient.version,
            field=k,
            old_value=before[k] or None,
            new_value=after[k] or None,
            reason=reason,
            amended_by=actor.user_id,
            amended_by_name=user.full_name if user else actor.username,
        )
        for k in changed
    ]
    _apply(patient, data)
    session.add_all(amendments)
    session.flush()
    audit.record(
        session,
        actor,
        "patient.amend",
        entity_type="patient",
        entity_id=patient.id,
        patient_id=patient.id,
        detail={"fields": ",".join(changed), "version": patient.version},
    )
    return amendments


def amendment_history(session: Session, actor: Actor, patient: Patient) -> list[PatientAmendment]:
    # The caller has loaded (and audited) the patient through get_patient.
    return list(
        session.scalars(
            select(PatientAmendment)
            .where(PatientAmendment.patient_id == patient.id)
            .order_by(PatientAmendment.id.desc())
        )
    )


def add_to_care_team(session: Session, actor: Actor, patient_id: int, user_id: int) -> None:
    actor.require(Permission.CARE_TEAM_MANAGE)
    patient = get_patient(session, actor, patient_id, purpose="care_team")
    member = session.get(User, user_id)
    if member is None or not member.is_active:
        raise InvalidInput({"user_id": Message(N_("Choose an active staff member."))})
    exists_already = session.scalar(
        select(CareTeamMember.id).where(
            CareTeamMember.patient_id == patient.id, CareTeamMember.user_id == member.id
        )
    )
    if exists_already is None:
        session.add(CareTeamMember(patient_id=patient.id, user_id=member.id))
        audit.record(
            session,
            actor,
            "patient.care_team_add",
            entity_type="patient",
            entity_id=patient.id,
            patient_id=patient.id,
            detail={"user": member.username},
        )


def care_team(session: Session, patient: Patient) -> list[User]:
    return list(
        session.scalars(
            select(User)
            .join(CareTeamMember, CareTeamMember.user_id == User.id)
            .where(CareTeamMember.patient_id == patient.id)
            .order_by(User.full_name)
        )
    )


def staff_with_role(session: Session, role: Role) -> list[User]:
    return list(
        session.scalars(select(User).where(User.role == role.value, User.is_active.is_(True)))
    )
