"""Who may do what: the single table of roles and their permissions (pure, no I/O)."""

from __future__ import annotations

from enum import StrEnum

from regenspine.errors import N_


class Role(StrEnum):
    ADMIN = "admin"
    COORDINATOR = "coordinator"
    DOCTOR = "doctor"
    NURSE = "nurse"
    LAB_TECHNICIAN = "lab_technician"
    PHYSIOTHERAPIST = "physiotherapist"
    MEDICAL_DIRECTOR = "medical_director"
    AUDITOR = "auditor"


ROLE_LABELS: dict[Role, str] = {
    Role.ADMIN: N_("Administrator"),
    Role.COORDINATOR: N_("Coordinator"),
    Role.DOCTOR: N_("Doctor"),
    Role.NURSE: N_("Nurse"),
    Role.LAB_TECHNICIAN: N_("Laboratory technician"),
    Role.PHYSIOTHERAPIST: N_("Physiotherapist"),
    Role.MEDICAL_DIRECTOR: N_("Medical director"),
    Role.AUDITOR: N_("Auditor"),
}


class Permission(StrEnum):
    PATIENT_READ = "patient:read"
    PATIENT_CREATE = "patient:create"
    PATIENT_AMEND = "patient:amend"
    CARE_TEAM_MANAGE = "care_team:manage"
    CATALOG_READ = "catalog:read"
    AUDIT_READ = "audit:read"
    AUDIT_EXPORT = "audit:export"
    USER_MANAGE = "user:manage"
    EPISODE_READ = "episode:read"
    EPISODE_OPEN = "episode:open"
    EPISODE_ADVANCE = "episode:advance"  # which steps a role may take: episodes/states.py
    CONSULTATION_RECORD = "consultation:record"
    ELIGIBILITY_OVERRIDE = "eligibility:override"
    CONSENT_RECORD = "consent:record"
    PRIVACY_MANAGE = "privacy:manage"  # patients' access and erasure requests
    # Field-level: the clinical free text declared in auth/fields.py (complaints, reasons,
    # justifications). Roles without it see that a text exists, never what it says.
    CLINICAL_TEXT_READ = "clinical_text:read"


# What each permission lets a person do, in words a refusal can use.
PERMISSION_LABELS: dict[Permission, str] = {
    Permission.PATIENT_READ: N_("read patient records"),
    Permission.PATIENT_CREATE: N_("register patients"),
    Permission.PATIENT_AMEND: N_("correct patient records"),
    Permission.CARE_TEAM_MANAGE: N_("change a patient's care team"),
    Permission.CATALOG_READ: N_("read the catalogue of conditions"),
    Permission.AUDIT_READ: N_("read the audit log"),
    Permission.AUDIT_EXPORT: N_("export the audit log"),
    Permission.USER_MANAGE: N_("manage staff accounts"),
    Permission.EPISODE_READ: N_("read treatment episodes"),
    Permission.EPISODE_OPEN: N_("open treatment episodes"),
    Permission.EPISODE_ADVANCE: N_("move treatment episodes to their next step"),
    Permission.CONSULTATION_RECORD: N_("record consultations and red-flag screenings"),
    Permission.ELIGIBILITY_OVERRIDE: N_("override eligibility decisions"),
    Permission.CONSENT_RECORD: N_("record consent"),
    Permission.PRIVACY_MANAGE: N_("handle patients' data-rights requests"),
    Permission.CLINICAL_TEXT_READ: N_("read clinical notes"),
}


_CLINICAL_WRITE = {
    Permission.PATIENT_READ,
    Permission.CLINICAL_TEXT_READ,
    Permission.PATIENT_CREATE,
    Permission.PATIENT_AMEND,
    Permission.CATALOG_READ,
    Permission.EPISODE_READ,
}
_PATHWAY_FRONT_DESK = {
    Permission.EPISODE_OPEN,
    Permission.EPISODE_ADVANCE,
    Permission.CONSENT_RECORD,
}
_PATHWAY_CLINICIAN = _PATHWAY_FRONT_DESK | {
    Permission.CONSULTATION_RECORD,
    Permission.ELIGIBILITY_OVERRIDE,
}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    # Administrators run accounts and watch security events; they do not read clinical records.
    Role.ADMIN: frozenset({Permission.USER_MANAGE, Permission.AUDIT_READ, Permission.CATALOG_READ}),
    Role.COORDINATOR: frozenset(
        _CLINICAL_WRITE | _PATHWAY_FRONT_DESK | {Permission.CARE_TEAM_MANAGE}
    ),
    Role.DOCTOR: frozenset(_CLINICAL_WRITE | _PATHWAY_CLINICIAN | {Permission.CARE_TEAM_MANAGE}),
    Role.NURSE: frozenset(_CLINICAL_WRITE),
    Role.LAB_TECHNICIAN: frozenset(
        {
            Permission.PATIENT_READ,
            Permission.CLINICAL_TEXT_READ,
            Permission.CATALOG_READ,
            Permission.EPISODE_READ,
            Permission.EPISODE_ADVANCE,
        }
    ),
    # Record-level rule: a physiotherapist reads only patients on whose care team they are.
    Role.PHYSIOTHERAPIST: frozenset(
        {
            Permission.PATIENT_READ,
            Permission.CLINICAL_TEXT_READ,
            Permission.CATALOG_READ,
            Permission.EPISODE_READ,
        }
    ),
    Role.MEDICAL_DIRECTOR: frozenset(
        _CLINICAL_WRITE
        | _PATHWAY_CLINICIAN
        | {
            Permission.CARE_TEAM_MANAGE,
            Permission.AUDIT_READ,
            Permission.AUDIT_EXPORT,
            Permission.PRIVACY_MANAGE,
        }
    ),
    # Auditors check that the process was followed (who, when, which rule, which decision);
    # field-level rule: they do not read clinical free text (no CLINICAL_TEXT_READ).
    Role.AUDITOR: frozenset(
        {
            Permission.PATIENT_READ,
            Permission.CATALOG_READ,
            Permission.AUDIT_READ,
            Permission.AUDIT_EXPORT,
            Permission.EPISODE_READ,
        }
    ),
}

# Roles whose access to a patient depends on being on that patient's care team.
CARE_TEAM_RESTRICTED_ROLES: frozenset[Role] = frozenset({Role.PHYSIOTHERAPIST})


def role_has(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]
