"""A deterministic synthetic clinic for demonstrations and load tests: staff for every role,
patients with realistic Polish and English names and valid PESEL numbers. No real person."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from regenspine.audit import service as audit
from regenspine.auth import service as auth
from regenspine.auth.actor import SYSTEM_ACTOR
from regenspine.auth.models import User
from regenspine.auth.permissions import Role
from regenspine.config import get_settings
from regenspine.errors import N_, Conflict, Message
from regenspine.identifiers import format_mrn
from regenspine.patients.models import CareTeamMember, Patient
from regenspine.patients.pesel import make_pesel
from regenspine.patients.rules import normalise_for_search
from regenspine.sequences import next_values

DEMO_PASSWORD = "spine-demo-harbour-47"  # noqa: S105 (synthetic demo clinic only)
SEED = 20261124

DEMO_STAFF: list[tuple[str, str, Role, str]] = [
    ("admin", "Adam Nowicki", Role.ADMIN, "pl"),
    ("coordinator", "Katarzyna Wiśniewska", Role.COORDINATOR, "pl"),
    ("doctor", "Dr Piotr Zieliński", Role.DOCTOR, "pl"),
    ("nurse", "Emily Clarke", Role.NURSE, "en"),
    ("lab", "Tomasz Lewandowski", Role.LAB_TECHNICIAN, "pl"),
    ("physio", "Agnieszka Dąbrowska", Role.PHYSIOTHERAPIST, "pl"),
    ("director", "Dr Ewa Kamińska", Role.MEDICAL_DIRECTOR, "pl"),
    ("auditor", "James Whitfield", Role.AUDITOR, "en"),
]

PL_FEMALE = [
    "Anna",
    "Maria",
    "Katarzyna",
    "Małgorzata",
    "Agnieszka",
    "Barbara",
    "Ewa",
    "Krystyna",
    "Elżbieta",
    "Zofia",
    "Joanna",
    "Magdalena",
    "Monika",
    "Jadwiga",
    "Dorota",
    "Beata",
    "Aleksandra",
    "Natalia",
    "Halina",
    "Grażyna",
]
PL_MALE = [
    "Piotr",
    "Krzysztof",
    "Andrzej",
    "Tomasz",
    "Paweł",
    "Jan",
    "Michał",
    "Marcin",
    "Stanisław",
    "Jakub",
    "Adam",
    "Łukasz",
    "Marek",
    "Grzegorz",
    "Józef",
    "Wojciech",
    "Mariusz",
    "Dariusz",
    "Zbigniew",
    "Kamil",
]
PL_SURNAMES = [
    ("Nowak", "Nowak"),
    ("Kowalski", "Kowalska"),
    ("Wiśniewski", "Wiśniewska"),
    ("Wójcik", "Wójcik"),
    ("Kowalczyk", "Kowalczyk"),
    ("Kamiński", "Kamińska"),
    ("Lewandowski", "Lewandowska"),
    ("Zieliński", "Zielińska"),
    ("Szymański", "Szymańska"),
    ("Woźniak", "Woźniak"),
    ("Dąbrowski", "Dąbrowska"),
    ("Kozłowski", "Kozłowska"),
    ("Jankowski", "Jankowska"),
    ("Mazur", "Mazur"),
    ("Wojciechowski", "Wojciechowska"),
    ("Kwiatkowski", "Kwiatkowska"),
    ("Krawczyk", "Krawczyk"),
    ("Kaczmarek", "Kaczmarek"),
    ("Piotrowski", "Piotrowska"),
    ("Grabowski", "Grabowska"),
    ("Żak", "Żak"),
    ("Sikora", "Sikora"),
]
EN_FEMALE = ["Olivia", "Emma", "Sophie", "Grace", "Charlotte", "Hannah", "Lucy", "Megan"]
EN_MALE = ["James", "Oliver", "Thomas", "Harry", "George", "William", "Daniel", "Samuel"]
EN_SURNAMES = [
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Williams",
    "Wilson",
    "Johnson",
    "Davies",
    "Robinson",
    "Wright",
    "Thompson",
    "Evans",
    "Walker",
    "O'Brien",
    "Hughes",
]
CITIES = [
    ("Warszawa", "00-"),
    ("Kraków", "30-"),
    ("Wrocław", "50-"),
    ("Poznań", "60-"),
    ("Gdańsk", "80-"),
    ("Łódź", "90-"),
    ("Lublin", "20-"),
    ("Katowice", "40-"),
]
STREETS = [
    "ul. Marszałkowska",
    "ul. Długa",
    "ul. Kwiatowa",
    "ul. Leśna",
    "ul. Polna",
    "al. Jana Pawła II",
    "ul. Słoneczna",
    "ul. Ogrodowa",
]


@dataclass(frozen=True)
class DemoResult:
    staff: list[tuple[str, str]]
    patients: int
    skipped: bool


def database_is_empty(session: Session) -> bool:
    return (session.scalar(select(func.count(User.id))) or 0) == 0 and (
        session.scalar(select(func.count(Patient.id))) or 0
    ) == 0


def _phone(rng: random.Random) -> str:
    return f"+48 {rng.randrange(500, 899)} {rng.randrange(100, 999)} {rng.randrange(100, 999)}"


def _patient_rows(rng: random.Random, count: int, first_number: int) -> list[dict[str, object]]:
    facility = get_settings().facility_code
    today = date.today()
    rows: list[dict[str, object]] = []
    for i in range(count):
        female = rng.random() < 0.52
        polish = rng.random() < 0.85
        birth = date(1948, 1, 1) + timedelta(days=rng.randrange(0, 365 * 55))
        if polish:
            given = rng.choice(PL_FEMALE if female else PL_MALE)
            family = rng.choice(PL_SURNAMES)[1 if female else 0]
            id_type, national_id, id_country = (
                "pesel",
                make_pesel(birth, rng.randrange(1000), "female" if female else "male"),
                "PL",
            )
            language = "pl"
        else:
            given = rng.choice(EN_FEMALE if female else EN_MALE)
            family = rng.choice(EN_SURNAMES)
            id_type, national_id, id_country = (
                "passport",
                f"{rng.choice('ABCEGH')}{rng.randrange(10**7, 10**8)}",
                rng.choice(["GB", "IE"]),
            )
            language = "en"
        city, postal_prefix = rng.choice(CITIES)
        rows.append(
            {
                "mrn": format_mrn(facility, first_number + i),
                "given_name": given,
                "family_name": family,
                "given_name_norm": normalise_for_search(given),
                "family_name_norm": normalise_for_search(family),
                "date_of_birth": min(birth, today),
                "sex": "female" if female else "male",
                "id_type": id_type,
                "national_id": national_id,
                "id_country": id_country,
                "phone": _phone(rng),
                "email": None,
                "preferred_language": language,
                "address": f"{rng.choice(STREETS)} {rng.randrange(1, 120)}",
                "postal_code": f"{postal_prefix}{rng.randrange(100, 999)}",
                "city": city,
                "country": "PL",
                "emergency_contact_name": None,
                "emergency_contact_phone": None,
                "possible_duplicate_of": None,
                "registered_at": audit.utcnow(),
                "registered_by": None,
                "version": 1,
            }
        )
    return rows


def _load_pathway(session: Session, staff_ids: dict[Role, int], count: int) -> None:
    from regenspine.demo_pathway import load_pathway_demo

    def actor(role: Role) -> auth.Actor:
        user = session.get(User, staff_ids[role])
        assert user is not None
        return auth.actor_for(user, "127.0.0.1")

    first = list(session.scalars(select(Patient).order_by(Patient.id).limit(count)))
    load_pathway_demo(session, actor(Role.COORDINATOR), actor(Role.DOCTOR), first)


def load_demo(
    session: Session,
    patients: int = 200,
    progress: Callable[[int], None] | None = None,
    batch: int = 2000,
) -> DemoResult:
    """Fills an empty database; a database that already has data is left untouched.

    Refused in production: the demo clinic's staff accounts, an administrator among them,
    share a password printed in the README, and such default accounts must never exist in a
    real clinic (ASVS 5.0 V6.3.2)."""
    if get_settings().is_production:
        raise Conflict(
            Message(
                N_(
                    "The demo clinic cannot be loaded in production (REGENSPINE_ENV=production): "
                    "its accounts share a published password. Create the first administrator "
                    "with `regenspine create-user` instead."
                )
            )
        )
    if not database_is_empty(session):
        return DemoResult([], 0, skipped=True)
    rng = random.Random(SEED)
    staff_ids: dict[Role, int] = {}
    for username, name, role, language in DEMO_STAFF:
        user = auth.create_user(
            session,
            SYSTEM_ACTOR,
            auth.UserCreate(username, name, role.value, DEMO_PASSWORD, None, language),
        )
        staff_ids[role] = user.id
    created = 0
    numbers = next_values(session, "mrn", patients)
    while created < patients:
        size = min(batch, patients - created)
        rows = _patient_rows(rng, size, numbers.start + created)
        ids = list(
            session.scalars(
                insert(Patient).returning(Patient.id, sort_by_parameter_order=True), rows
            )
        )
        audit.record_many(
            session,
            SYSTEM_ACTOR,
            [
                audit.PendingRecord("patient.create", "patient", pid, pid, {"source": "demo"})
                for pid in ids
            ],
        )
        # The demo physiotherapist looks after every tenth patient.
        team = [
            {"patient_id": pid, "user_id": staff_ids[Role.PHYSIOTHERAPIST]} for pid in ids[::10]
        ]
        if team:
            session.execute(insert(CareTeamMember), team)
        created += size
        if progress:
            progress(size)
    _load_pathway(session, staff_ids, min(patients, 40))
    audit.record(session, SYSTEM_ACTOR, "demo.load", detail={"patients": patients})
    return DemoResult([(u, r.value) for u, _, r, _ in DEMO_STAFF], patients, skipped=False)
