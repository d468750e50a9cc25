"""Imports every domain's models so the metadata (and Alembic) sees the whole schema."""

from regenspine.audit.models import AuditRecord
from regenspine.auth.models import ApiToken, RecoveryCode, User, WebSession
from regenspine.consultations.models import Consultation
from regenspine.db import Base
from regenspine.eligibility.models import EligibilityDecision, RedFlagScreening
from regenspine.episodes.models import Consent, Episode, EpisodeEvent
from regenspine.mail.models import OutboxMessage
from regenspine.patients.models import CareTeamMember, Patient, PatientAmendment
from regenspine.sequences import Counter

__all__ = [
    "ApiToken",
    "AuditRecord",
    "Base",
    "CareTeamMember",
    "Consent",
    "Consultation",
    "EligibilityDecision",
    "Episode",
    "EpisodeEvent",
    "OutboxMessage",
    "RedFlagScreening",
    "Counter",
    "Patient",
    "PatientAmendment",
    "RecoveryCode",
    "User",
    "WebSession",
]
