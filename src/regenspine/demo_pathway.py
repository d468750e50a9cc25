"""Demo episodes at every stage of the pathway, made through the real services (so every rule,
event and audit record is exactly what the clinic would produce)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from regenspine.auth.actor import Actor
from regenspine.consultations.rules import BOOLEANS
from regenspine.eligibility import service as eligibility
from regenspine.eligibility.red_flags import items_for_region
from regenspine.episodes import consent
from regenspine.episodes import service as episodes
from regenspine.patients.models import Patient

JUSTIFICATION = (
    "Reviewed with the patient: anticoagulant paused for 5 days under the cardiologist's plan; "
    "benefit and risk discussed."
)


def _consultation(levels: Sequence[str], region: str, **changes: object) -> dict[str, object]:
    level = levels[0]
    data: dict[str, object] = {
        "presenting_complaint": "Chronic axial pain worse on sitting, failed conservative care",
        "pain_weeks": 60,
        "physiotherapy_weeks": 12,
        "prior_treatments": "Physiotherapy 12 weeks, NSAIDs",
        "prior_fusion_levels": [],
        "medications": "Paracetamol as needed",
        "bmi": 27.0,
        "imaging_modality": "mri",
        "imaging_date": "2026-09-15",
        "level_findings": {
            level: {
                "pfirrmann": 3,
                "herniation": "protrusion",
                "annular_fissure": True,
                "modic": "none",
                "stenosis": "none",
                "disc_height_loss_percent": 20,
            }
        },
        "diagnoses": [{"condition": "disc_protrusion", "levels": [level], "side": None}],
        "target_levels": list(levels),
    } | {flag: False for flag in BOOLEANS}
    if region == "cervical":
        data["diagnoses"] = [{"condition": "disc_herniation", "levels": [level], "side": None}]
    data.update(changes)
    return data


def _flags(region: str, positive: str | None = None) -> dict[str, bool]:
    return {item.id: item.id == positive for item in items_for_region(region)}


def load_pathway_demo(
    session: Session, coordinator: Actor, doctor: Actor, patients: Sequence[Patient]
) -> int:
    """Puts the first patients at each stage; returns how many episodes were opened."""
    plan = [
        ("referred", 5),
        ("urgent", 2),
        ("not_eligible", 3),
        ("needs_review", 3),
        ("overridden", 2),
        ("eligible", 3),
        ("consented", 3),
        ("withdrawn", 1),
    ]
    stages = [stage for stage, count in plan for _ in range(count)]
    opened = 0
    for patient, stage in zip(patients, stages, strict=False):
        cervical = opened % 7 == 6
        region, levels = ("cervical", ["C5-C6"]) if cervical else ("lumbar", ["L4-L5"])
        condition = "disc_herniation" if cervical else "disc_protrusion"
        episode = episodes.open_episode(session, coordinator, patient.id, condition, region)
        opened += 1
        if stage == "referred":
            continue
        changes: dict[str, object] = {}
        positive = None
        if stage == "urgent":
            positive = next(
                i.id
                for i in items_for_region(region)
                if i.category in ("cauda_equina", "myelopathy")
            )
        elif stage == "not_eligible":
            changes = {"active_infection": True}
        elif stage in ("needs_review", "overridden"):
            changes = {"anticoagulant": True}
        eligibility.assess(
            session,
            doctor,
            episode.id,
            _consultation(levels, region, **changes),
            _flags(region, positive),
        )
        if stage == "overridden":
            eligibility.override(session, doctor, episode.id, JUSTIFICATION)
        if stage in ("consented", "withdrawn"):
            consent.record_consent(
                session,
                coordinator,
                episode.id,
                method="tablet_signature",
                signed_name=f"{patient.given_name} {patient.family_name}",
                confirmed=True,
                language=patient.preferred_language,
            )
        if stage == "withdrawn":
            consent.withdraw_consent(
                session, coordinator, episode.id, "Patient wants to wait until after the summer"
            )
    return opened
