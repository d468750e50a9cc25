"""The access matrix: every route of the app × every role (and the anonymous visitor).

OWASP ASVS 5.0, chapter V8 (authorization), level 2:

* V8.1.1 - the authorization rules are documented: ``MATRIX`` below is that document for the
  HTTP surface, one entry per route, checked against ``auth/permissions.py``;
* V8.2.1 - function-level access: each role reaches only the routes its permissions allow
  (refusal = 403, never a silent success), a visitor without a session is sent to sign in
  (pages) or gets 401 (JSON API);
* V8.2.2 - data-specific access (IDOR / BOLA): a physiotherapist reaches the records of a
  patient on their care team and is refused every record of any other patient, by id, on
  every route that takes a patient or an episode id;
* V8.3.1 - the rules are enforced on the server, per request, whatever the client sends
  (the bodies below are valid, so a refusal comes from authorization, not from validation).

A route that ``app.routes`` lists and the matrix does not is a failure: a new route must say
who may call it before it ships.

For a state-changing route "allowed" means the answer is not 401/403 (nor a 5xx, nor the
sign-in page): a 409/422 caused by the body or the episode's state is fine, because the
services check the permission before anything else. A read that is allowed must answer
below 400, so the fixture data is realistic enough to show the record really was served.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select

from regenspine.audit.models import AuditRecord
from regenspine.auth import service as auth
from regenspine.auth.actor import SYSTEM_ACTOR
from regenspine.auth.permissions import (
    CARE_TEAM_RESTRICTED_ROLES,
    ROLE_PERMISSIONS,
    Permission,
    Role,
)
from regenspine.db import Base, unit_of_work
from regenspine.eligibility import service as eligibility
from regenspine.eligibility.red_flags import items_for_region
from regenspine.episodes import consent as consents
from regenspine.episodes import service as episodes
from regenspine.episodes.states import TRANSITIONS, Step
from regenspine.patients import service as patients
from tests.conftest import PASSWORD, browser_client, sign_in, valid_patient
from tests.integration.test_pathway import good_consultation


class Outcome(StrEnum):
    OK = "allowed"
    DENIED = "refused 403"
    LOGIN = "redirect to sign-in"
    UNAUTHENTICATED = "401"
    SIGNED_OUT = "signed out, redirect to sign-in"


ALL = frozenset(Role)
# The role groups the matrix speaks in; test_role_groups_agree_with_the_permission_table keeps
# them honest against auth/permissions.py and episodes/states.py.
PATIENT_READERS = ALL - {Role.ADMIN}
CLINICAL_WRITERS = frozenset({Role.COORDINATOR, Role.DOCTOR, Role.NURSE, Role.MEDICAL_DIRECTOR})
CARE_TEAM_MANAGERS = frozenset({Role.COORDINATOR, Role.DOCTOR, Role.MEDICAL_DIRECTOR})
EPISODE_READERS = ALL - {Role.ADMIN}
FRONT_DESK = frozenset({Role.COORDINATOR, Role.DOCTOR, Role.MEDICAL_DIRECTOR})
CLINICIANS = frozenset({Role.DOCTOR, Role.MEDICAL_DIRECTOR})
AUDIT_READERS = frozenset({Role.ADMIN, Role.MEDICAL_DIRECTOR, Role.AUDITOR})
AUDIT_EXPORTERS = frozenset({Role.MEDICAL_DIRECTOR, Role.AUDITOR})
USER_ADMINS = frozenset({Role.ADMIN})
PRIVACY_OFFICERS = frozenset({Role.MEDICAL_DIRECTOR})
NOBODY: frozenset[Role] = frozenset()
# Roles that may open a patient's records only when they are on that patient's care team.
CARE_TEAM_BOUND = frozenset({Role.PHYSIOTHERAPIST})
# Path parameters that name a patient's record: the care-team rule applies to every such route.
RECORD_PARAMS = ("{patient_id}", "{episode_id}")

NAME_OTHER = "Jan Kowalski"
NAME_TEAM = "Anna Nowak"
CLEARANCE_NOTE = "Reassessed in clinic: no saddle anaesthesia, bladder normal, MRI reviewed."
JUSTIFICATION = "Infection treated and resolved; BMI reviewed with the anaesthetist, acceptable."


# --- the fixture data: one patient on the physiotherapist's care team, one not --------------


@dataclass
class World:
    patient: int
    episodes: dict[str, int]
    name: str
    data: dict[str, str]  # as registered, for forms that send the whole record back


@dataclass
class Fixture:
    other: World  # nobody's care team: the matrix runs against this one
    team: World  # the physiotherapist is on this patient's care team
    tokens: dict[tuple[Role, str], int]  # (owner, "api" | "page") -> API token id
    target_user: int  # an account the administrator may edit
    care_team_candidate: int  # a staff member who may be added to a care team


def red_flags(positive: bool = False) -> dict[str, bool]:
    answers = {item.id: False for item in items_for_region("lumbar")}
    if positive:
        answers[next(iter(answers))] = True
    return answers


# Which fixture episode each key names, with the condition it treats (one open episode per
# condition per patient). Conditions not listed here stay free for the "open episode" probes.
EPISODES = {
    "referred": "disc_protrusion",  # nothing recorded yet
    "to_assess": "disc_herniation",  # the assessment probes record on this one
    "eligible": "spinal_stenosis",  # assessed, eligible decision
    "not_eligible": "degenerative_disc_disease",  # the override probes act on this one
    "to_consent": "sciatica",  # eligible; the consent probe records on this one
    "consented": "low_back_pain",  # signed consent (printable, withdrawable)
    "red_flag": "annular_fissure",  # urgent referral (letter, clearance)
}


def build_world(session: Any, staff: Any, patient: dict[str, str], name: str) -> World:
    coordinator, doctor = staff.actor(Role.COORDINATOR), staff.actor(Role.DOCTOR)
    pid = patients.register_patient(session, coordinator, patient).id
    ids = {
        key: episodes.open_episode(session, coordinator, pid, code, "lumbar").id
        for key, code in EPISODES.items()
    }
    for key in ("eligible", "to_consent", "consented"):
        eligibility.assess(session, doctor, ids[key], good_consultation(), red_flags())
    eligibility.assess(
        session,
        doctor,
        ids["not_eligible"],
        good_consultation(active_infection=True, bmi=41),
        red_flags(),
    )
    eligibility.assess(session, doctor, ids["red_flag"], good_consultation(), red_flags(True))
    consents.record_consent(
        session,
        coordinator,
        ids["consented"],
        method="tablet_signature",
        signed_name=name,
        confirmed=True,
        language="en",
    )
    return World(pid, ids, name, patient)


def build_fixture(factory: Any, staff: Any) -> Fixture:
    coordinator = staff.actor(Role.COORDINATOR)
    with unit_of_work(factory) as s:
        other = build_world(s, staff, valid_patient(), NAME_OTHER)
        team = build_world(
            s,
            staff,
            valid_patient(
                given_name="Anna",
                family_name="Nowak",
                sex="female",
                date_of_birth="1961-02-03",
                id_type="passport",
                national_id="PNOW0001",
                id_country="DE",
            ),
            NAME_TEAM,
        )
        patients.add_to_care_team(
            s, coordinator, team.patient, staff.users[Role.PHYSIOTHERAPIST].id
        )
        tokens = {
            (role, kind): auth.create_api_token(
                s, staff.actor(role), f"matrix {kind}", [Permission.CATALOG_READ.value]
            )[0].id
            for role in Role
            for kind in ("api", "page")
        }
        target = auth.create_user(
            s, SYSTEM_ACTOR, auth.UserCreate("matrix-target", "Matrix Target", "nurse", PASSWORD)
        )
        return Fixture(other, team, tokens, target.id, staff.users[Role.NURSE].id)


# --- request bodies: valid, so a refusal can only come from authorization ------------------

Body = Callable[[Role | None, Fixture, World], dict[str, Any]]
ORDER = {role: n for n, role in enumerate(Role)}


def _n(role: Role | None) -> int:
    return len(ORDER) if role is None else ORDER[role]


def _who(role: Role | None) -> str:
    return role.value if role else "anonymous"


def json_body(value: dict[str, Any]) -> Body:
    return lambda role, fx, w: {"json": value}


def form_body(value: dict[str, Any]) -> Body:
    return lambda role, fx, w: {"data": value}


def new_patient(prefix: str) -> Callable[[Role | None], dict[str, str]]:
    def make(role: Role | None) -> dict[str, str]:
        return valid_patient(
            id_type="passport",
            national_id=f"P{prefix}{_n(role):04d}",
            id_country="DE",
            given_name="Matrix",
            family_name=f"{prefix.title()}{chr(65 + _n(role))}",
        )

    return make


def open_episode_body(conditions: list[tuple[str, str]]) -> Callable[[Role | None], dict[str, str]]:
    def make(role: Role | None) -> dict[str, str]:
        code, region = conditions[_n(role) % len(conditions)]
        return {"condition_code": code, "region": region}

    return make


API_EPISODE = open_episode_body(
    [("radiculopathy", "lumbar"), ("radiculitis", "lumbar"), ("neck_pain", "cervical")]
)
PAGE_EPISODE = open_episode_body(
    [
        ("herniated_nucleus_pulposus", "lumbar"),
        ("disc_extrusion", "lumbar"),
        ("osteophytes", "lumbar"),
    ]
)


def assessment_form() -> dict[str, Any]:
    c = good_consultation()
    form: dict[str, Any] = {
        k: str(c[k])
        for k in (
            "presenting_complaint",
            "pain_weeks",
            "physiotherapy_weeks",
            "prior_treatments",
            "medications",
            "bmi",
            "imaging_modality",
            "imaging_date",
        )
    }
    for key, value in c["level_findings"]["L4-L5"].items():
        form[f"lf.L4-L5.{key}"] = "yes" if value is True else str(value)
    form |= {
        "dx.0.condition": "disc_protrusion",
        "dx.0.levels": ["L4-L5"],
        "target_levels": ["L4-L5"],
        "change_reason": "Re-checked the imaging findings",
    }
    form |= {f"rf.{item}": "no" for item in red_flags()}
    return form


def amend_form(role: Role | None, fx: Fixture, w: World) -> dict[str, Any]:
    return {"data": w.data | {"city": f"Miasto {_who(role)}", "reason": "Moved house"}}


# --- the matrix -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # exactly as app.routes lists it
    allowed: frozenset[Role]  # roles that get through (on a patient of their care team)
    anonymous: Outcome  # a visitor without a session
    body: Body | None = None
    episode: str = "referred"  # which fixture episode {episode_id} is
    granted: Outcome = Outcome.OK  # what an allowed role gets
    fresh: bool = False  # the call replaces or ends the session: use a throw-away client
    url: str | None = None  # the concrete URL, when the route is a mount
    label: str = ""  # tells apart several probes of one route

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)

    @property
    def record_level(self) -> bool:
        return any(p in self.path for p in RECORD_PARAMS)

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}" + (f" [{self.label}]" if self.label else "")


PUBLIC, API, PAGE = Outcome.OK, Outcome.UNAUTHENTICATED, Outcome.LOGIN
A = "/api/v1"


def C(method: str, path: str, allowed: Iterable[Role], anonymous: Outcome, **kw: Any) -> Case:
    return Case(method, path, frozenset(allowed), anonymous, **kw)


# fmt: off
MATRIX: list[Case] = [
    # --- public --------------------------------------------------------------------------
    C("GET", "/livez", ALL, PUBLIC),
    C("GET", "/healthz", ALL, PUBLIC),
    C("GET", "/openapi.json", ALL, PUBLIC),
    C("GET", "/api/docs", ALL, PUBLIC),
    C("GET", "/docs/oauth2-redirect", ALL, PUBLIC),
    C("GET", "/static", ALL, PUBLIC, url="/static/app.css"),
    C("GET", "/", ALL, PAGE),  # the start page of each role; the sign-in page for anyone else
    # --- sign-in and the account of whoever is signed in -----------------------------------
    C("GET", "/login", ALL, PUBLIC),
    C("POST", "/login", ALL, PUBLIC, fresh=True,
      body=lambda role, fx, w: {"data": {
          "username": (role or Role.NURSE).value.replace("_", "-"),
          "password": PASSWORD, "next": "/worklist"}}),
    C("GET", "/login/mfa", ALL, PAGE),
    # A session holder reaches the second step; a wrong code is 401 (authentication, not role).
    C("POST", "/login/mfa", ALL, PAGE, granted=Outcome.UNAUTHENTICATED,
      body=form_body({"code": "not-a-code", "next": "/patients"})),
    C("POST", "/logout", ALL, PAGE, fresh=True, granted=Outcome.SIGNED_OUT),
    C("POST", "/language", ALL, PUBLIC,
      body=form_body({"language": "en", "next": "/worklist"})),
    C("GET", "/account", ALL, PAGE),
    C("POST", "/account/password", ALL, PAGE,
      body=form_body({"current_password": PASSWORD, "new_password": PASSWORD})),
    C("POST", "/account/sessions", ALL, PAGE,
      body=form_body({"session": "others", "password": PASSWORD})),
    C("POST", "/account/password-strength", ALL, PAGE,
      body=form_body({"new_password": "tr0ub4dor"})),
    C("GET", "/account/mfa", ALL, PAGE),
    C("POST", "/account/mfa", ALL, PAGE, body=form_body({"code": "not-a-code"})),
    C("POST", "/account/tokens", ALL, PAGE,
      body=lambda role, fx, w: {"data": {
          "name": "matrix page", "scopes": Permission.CATALOG_READ.value,
          "form_key": secrets.token_urlsafe(24)}}),
    C("POST", "/account/tokens/{token_id}/revoke", ALL, PAGE),
    C("GET", f"{A}/me", ALL, API),
    C("GET", f"{A}/tokens", ALL, API),
    C("POST", f"{A}/tokens", ALL, API,
      body=json_body({"name": "matrix api", "scopes": [Permission.CATALOG_READ.value]})),
    C("DELETE", f"{A}/tokens/{{token_id}}", ALL, API),
    # --- staff administration --------------------------------------------------------------
    C("GET", f"{A}/users", USER_ADMINS, API),
    C("POST", f"{A}/users", USER_ADMINS, API,
      body=lambda role, fx, w: {"json": {
          "username": f"matrix-api-{_who(role)}", "full_name": "Matrix Api",
          "role": "nurse", "password": PASSWORD}}),
    C("PATCH", f"{A}/users/{{user_id}}", USER_ADMINS, API, body=json_body({"is_active": True})),
    C("GET", "/admin/users", USER_ADMINS, PAGE),
    C("POST", "/admin/users", USER_ADMINS, PAGE,
      body=lambda role, fx, w: {"data": {
          "username": f"matrix-page-{_who(role)}", "full_name": "Matrix Page",
          "role": "nurse", "password": PASSWORD, "language": "pl"}}),
    C("POST", "/admin/users/{user_id}", USER_ADMINS, PAGE,
      body=form_body({"role": "nurse", "is_active": "yes"})),
    C("POST", f"{A}/users/{{user_id}}/credential-resets", USER_ADMINS, API,
      body=json_body({"what": "api_tokens", "reason": "Laptop with the token was stolen."})),
    C("POST", "/admin/users/{user_id}/credentials", USER_ADMINS, PAGE,
      body=form_body({"what": "api_tokens", "reason": "Laptop with the token was stolen."})),
    # --- catalogue ---------------------------------------------------------------------------
    C("GET", f"{A}/catalog/conditions", ALL, API),
    C("GET", f"{A}/catalog/conditions/{{code}}", ALL, API),
    # --- patients ----------------------------------------------------------------------------
    C("GET", f"{A}/patients", PATIENT_READERS, API),
    C("POST", f"{A}/patients", CLINICAL_WRITERS, API,
      body=lambda role, fx, w: {"json": new_patient("API")(role)}),
    C("GET", f"{A}/patients/{{patient_id}}", PATIENT_READERS, API),
    C("GET", f"{A}/patients/{{patient_id}}/amendments", PATIENT_READERS, API),
    C("POST", f"{A}/patients/{{patient_id}}/amendments", CLINICAL_WRITERS, API,
      body=lambda role, fx, w: {"json": {
          "changes": {"city": f"Miasto {_who(role)}"}, "reason": "Moved house"}}),
    C("POST", f"{A}/patients/{{patient_id}}/care-team", CARE_TEAM_MANAGERS, API,
      body=lambda role, fx, w: {"json": {"user_id": fx.care_team_candidate}}),
    C("GET", "/patients", PATIENT_READERS, PAGE),
    C("POST", "/patients", PATIENT_READERS, PAGE, body=form_body({"q": "Matrix"})),
    C("GET", "/patients/new", CLINICAL_WRITERS, PAGE),
    C("POST", "/patients/new", CLINICAL_WRITERS, PAGE,
      body=lambda role, fx, w: {"data": new_patient("WEB")(role)}),
    C("GET", "/patients/{patient_id}", PATIENT_READERS, PAGE),
    C("GET", "/patients/{patient_id}/amend", CLINICAL_WRITERS, PAGE),
    C("POST", "/patients/{patient_id}/amend", CLINICAL_WRITERS, PAGE, body=amend_form),
    # --- episodes ----------------------------------------------------------------------------
    C("GET", f"{A}/worklist", EPISODE_READERS, API),
    C("GET", "/worklist", EPISODE_READERS, PAGE),
    C("GET", f"{A}/patients/{{patient_id}}/episodes", EPISODE_READERS, API),
    C("POST", f"{A}/patients/{{patient_id}}/episodes", FRONT_DESK, API,
      body=lambda role, fx, w: {"json": API_EPISODE(role)}),
    C("GET", "/patients/{patient_id}/episodes/panel", EPISODE_READERS, PAGE),
    C("POST", "/patients/{patient_id}/episodes", FRONT_DESK, PAGE,
      body=lambda role, fx, w: {"data": PAGE_EPISODE(role)}),
    C("GET", f"{A}/episodes/{{episode_id}}", EPISODE_READERS, API),
    C("GET", "/episodes/{episode_id}", EPISODE_READERS, PAGE),
    # Steps: the permission (episode:advance) and the pathway table's roles for the step both
    # apply. Neither probe changes the episode (no reason / nothing recorded yet).
    C("POST", f"{A}/episodes/{{episode_id}}/steps", FRONT_DESK, API, label="cancel",
      body=json_body({"step": "cancel", "target": "cancelled"})),
    C("POST", f"{A}/episodes/{{episode_id}}/steps", CLINICIANS, API, label="assess",
      body=json_body({"step": "assess", "target": "assessed"})),
    C("POST", "/episodes/{episode_id}/steps", FRONT_DESK, PAGE, label="cancel",
      body=form_body({"step": "cancel", "target": "cancelled", "expected_state": "referred"})),
    C("POST", "/episodes/{episode_id}/steps", CLINICIANS, PAGE, label="assess",
      body=form_body({"step": "assess", "target": "assessed"})),
    C("GET", f"{A}/episodes/{{episode_id}}/urgent-referral.pdf", EPISODE_READERS, API,
      episode="red_flag"),
    C("GET", "/episodes/{episode_id}/urgent-referral.pdf", EPISODE_READERS, PAGE,
      episode="red_flag"),
    C("GET", f"{A}/episodes/{{episode_id}}/consent.pdf", EPISODE_READERS, API,
      episode="consented"),
    C("GET", "/episodes/{episode_id}/consent.pdf", EPISODE_READERS, PAGE, episode="consented"),
    C("GET", "/episodes/{episode_id}/consent-document", EPISODE_READERS, PAGE,
      episode="eligible"),
    C("POST", "/episodes/{episode_id}/consent", FRONT_DESK, PAGE, episode="to_consent",
      body=lambda role, fx, w: {"data": {
          "method": "tablet_signature", "signed_name": w.name, "confirmed": "yes",
          "language": "en"}}),
    C("POST", "/episodes/{episode_id}/consent/withdraw", FRONT_DESK, PAGE, episode="consented",
      body=form_body({"reason": "Patient changed their mind"})),
    # --- assessment and eligibility -----------------------------------------------------------
    C("POST", f"{A}/episodes/{{episode_id}}/assessment", CLINICIANS, API, episode="to_assess",
      body=json_body({"consultation": good_consultation(), "red_flags": red_flags(),
                      "change_reason": "Re-checked the imaging findings"})),
    C("GET", "/episodes/{episode_id}/assess", CLINICIANS, PAGE, episode="to_assess"),
    C("POST", "/episodes/{episode_id}/assess", CLINICIANS, PAGE, episode="to_assess",
      body=form_body(assessment_form())),
    C("GET", f"{A}/episodes/{{episode_id}}/decision", EPISODE_READERS, API, episode="eligible"),
    C("POST", f"{A}/episodes/{{episode_id}}/override", CLINICIANS, API, episode="not_eligible",
      body=json_body({"justification": JUSTIFICATION})),
    C("POST", "/episodes/{episode_id}/override", CLINICIANS, PAGE, episode="not_eligible",
      body=form_body({"justification": JUSTIFICATION})),
    C("POST", f"{A}/episodes/{{episode_id}}/red-flag-clearance", CLINICIANS, API,
      episode="red_flag", body=json_body({"note": CLEARANCE_NOTE})),
    C("POST", "/episodes/{episode_id}/clear-red-flag", CLINICIANS, PAGE, episode="red_flag",
      body=form_body({"note": CLEARANCE_NOTE})),
    # --- audit log ---------------------------------------------------------------------------
    C("GET", f"{A}/audit/records", AUDIT_READERS, API),
    C("GET", f"{A}/audit/records.csv", AUDIT_EXPORTERS, API),
    C("GET", f"{A}/audit/verify", AUDIT_READERS, API),
    C("GET", "/audit", AUDIT_READERS, PAGE),
    C("GET", "/audit/export.csv", AUDIT_EXPORTERS, PAGE),
    # --- patients' data rights ------------------------------------------------------------------
    C("GET", f"{A}/patients/{{patient_id}}/access-export", PRIVACY_OFFICERS, API),
    C("GET", f"{A}/patients/{{patient_id}}/access-export.pdf", PRIVACY_OFFICERS, API),
    # Refused by the retention rule for these fresh records (201, nothing erased).
    C("POST", f"{A}/patients/{{patient_id}}/erasure-requests", PRIVACY_OFFICERS, API,
      body=json_body({"reason": "The patient asked for erasure in writing"})),
]
# fmt: on


# --- enumerating the app's routes ---------------------------------------------------------


def _flat_routes(app: Any) -> Iterator[Any]:
    try:  # FastAPI versions that keep included routers lazily
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - older FastAPI lists plain routes
        yield from app.routes
        return
    yield from iter_route_contexts(app.routes)


def app_routes(app: Any) -> set[tuple[str, str]]:
    """(method, path) of everything the app answers; HEAD rides along with GET, a mount
    (static files) counts as GET of its prefix."""
    found: set[tuple[str, str]] = set()
    for route in _flat_routes(app):
        path = getattr(route, "path", None)
        assert path is not None, f"a route without a path: {route!r}"
        methods = getattr(route, "methods", None) or {"GET"}
        for method in methods:
            if method == "HEAD" and "GET" in methods:
                continue
            found.add((method, path))
    return found


def test_every_route_of_the_app_has_an_entry_in_the_matrix(app):
    routes = app_routes(app)
    covered = {case.key for case in MATRIX}
    missing = sorted(routes - covered)
    stale = sorted(covered - routes)
    assert not missing, "routes with no entry in the access matrix (add one to MATRIX): " + (
        ", ".join(f"{m} {p}" for m, p in missing)
    )
    assert not stale, "matrix entries for routes the app does not have: " + (
        ", ".join(f"{m} {p}" for m, p in stale)
    )
    names = [case.name for case in MATRIX]
    assert len(names) == len(set(names)), "a route is listed twice without a label"


def _holders(*permissions: Permission) -> frozenset[Role]:
    return frozenset(r for r in Role if set(permissions) <= ROLE_PERMISSIONS[r])


def _step_roles(step: Step) -> frozenset[Role]:
    (roles,) = {t.roles for t in TRANSITIONS if t.step == step}
    return roles & _holders(Permission.EPISODE_ADVANCE)


def test_role_groups_agree_with_the_permission_table():
    """The matrix is written out by hand; this says when permissions.py moved under it."""
    assert _holders(Permission.PATIENT_READ) == PATIENT_READERS
    assert _holders(Permission.PATIENT_CREATE) == CLINICAL_WRITERS
    assert _holders(Permission.PATIENT_AMEND) == CLINICAL_WRITERS
    assert _holders(Permission.CARE_TEAM_MANAGE) == CARE_TEAM_MANAGERS
    assert _holders(Permission.EPISODE_READ) == EPISODE_READERS
    assert _holders(Permission.EPISODE_OPEN) == FRONT_DESK
    assert _holders(Permission.CONSENT_RECORD) == FRONT_DESK
    assert _holders(Permission.CONSULTATION_RECORD) == CLINICIANS
    assert _holders(Permission.ELIGIBILITY_OVERRIDE) == CLINICIANS
    assert _holders(Permission.AUDIT_READ) == AUDIT_READERS
    assert _holders(Permission.AUDIT_EXPORT) == AUDIT_EXPORTERS
    assert _holders(Permission.USER_MANAGE) == USER_ADMINS
    assert _holders(Permission.PRIVACY_MANAGE) == PRIVACY_OFFICERS
    assert _holders(Permission.CATALOG_READ) == ALL
    assert _step_roles(Step.CANCEL) == FRONT_DESK
    assert _step_roles(Step.ASSESS) == CLINICIANS
    assert CARE_TEAM_RESTRICTED_ROLES == CARE_TEAM_BOUND


# --- running the matrix ---------------------------------------------------------------------


def _is_api(path: str) -> bool:
    return path.startswith("/api/v1/")


def _to_login(r: Any) -> bool:
    return r.status_code in (302, 303, 307) and r.headers.get("location", "").startswith("/login")


def mismatch(expected: Outcome, case: Case, r: Any, client: Any) -> str | None:
    """None when the response is the expected outcome, else what was seen."""
    seen = f"{r.status_code} {r.headers.get('location', '')} {r.text[:160]!r}"
    ctype = r.headers.get("content-type", "")
    if expected is Outcome.OK:
        bad = r.status_code in (401, 403) or r.status_code >= 500 or _to_login(r)
        if case.method == "GET" and r.status_code >= 400:
            bad = True  # a read that is allowed must actually be served
        return seen if bad else None
    if expected is Outcome.DENIED:
        want = "application/problem+json" if _is_api(case.path) else "text/html"
        return None if r.status_code == 403 and ctype.startswith(want) else seen
    if expected is Outcome.LOGIN:
        return None if _to_login(r) else seen
    if expected is Outcome.UNAUTHENTICATED:
        ok = r.status_code == 401 and (
            not _is_api(case.path) or ctype.startswith("application/problem+json")
        )
        return None if ok else seen
    if expected is Outcome.SIGNED_OUT:
        after = client.get("/api/v1/me")
        return None if _to_login(r) and after.status_code == 401 else f"{seen}, then {after}"
    raise AssertionError(expected)


@dataclass
class Principals:
    app: Any
    staff: Any
    clients: Callable[[Role], Any]
    anonymous_client: Any = field(init=False)

    def __post_init__(self) -> None:
        self.anonymous_client = self.anonymous()

    def anonymous(self) -> Any:
        client = browser_client(self.app)
        client.get("/login")  # the double-submit CSRF cookie a visitor's forms carry
        client.headers["X-CSRF-Token"] = client.cookies["rs_csrf"]
        return client

    def client(self, role: Role | None, fresh: bool) -> Any:
        if role is None:
            return self.anonymous() if fresh else self.anonymous_client
        if fresh:
            return sign_in(self.app, self.staff.username(role))
        return self.clients(role)


# ASVS 5.0 V3.4.x: on every answer of every route, whoever asks and whatever the outcome.
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


def missing_security_headers(r: Any) -> str | None:
    missing = [k for k, v in SECURITY_HEADERS.items() if r.headers.get(k) != v]
    if "frame-ancestors 'none'" not in r.headers.get("content-security-policy", ""):
        missing.append("content-security-policy")
    if "cache-control" not in r.headers:
        missing.append("cache-control")
    return f"{r.status_code} without {', '.join(missing)}" if missing else None


def url_for(case: Case, role: Role | None, fx: Fixture, w: World) -> str:
    owner = role or Role.NURSE
    kind = "api" if case.method == "DELETE" else "page"
    return (case.url or case.path).format(
        patient_id=w.patient,
        episode_id=w.episodes[case.episode],
        token_id=fx.tokens[(owner, kind)],
        user_id=fx.target_user,
        code="disc_protrusion",
    )


def probe(
    who: Principals, case: Case, role: Role | None, fx: Fixture, w: World, expected: Outcome
) -> str | None:
    client = who.client(role, case.fresh)
    kwargs = case.body(role, fx, w) if case.body else {}
    r = client.request(case.method, url_for(case, role, fx, w), follow_redirects=False, **kwargs)
    problem = mismatch(expected, case, r, client)
    if problem is None:
        problem = missing_security_headers(r)
    if problem is None:
        return None
    where = "their care team's patient" if w is fx.team else "a patient not on their team"
    scope = f" ({where})" if case.record_level else ""
    return f"{case.name} as {_who(role)}{scope}: expected {expected}, got {problem}"


def expected_for(case: Case, role: Role | None, on_team: bool) -> Outcome:
    if role is None:
        return case.anonymous
    allowed = case.allowed
    if case.record_level and not on_team:
        allowed = allowed - CARE_TEAM_BOUND
    return case.granted if role in allowed else Outcome.DENIED


def test_every_route_answers_every_role_as_the_matrix_says(app, staff, clients, factory):
    fx = build_fixture(factory, staff)
    who = Principals(app, staff, clients)
    failures: list[str] = []
    for case in MATRIX:
        for role in (*Role, None):
            found = probe(who, case, role, fx, fx.other, expected_for(case, role, False))
            if found:
                failures.append(found)
        if case.record_level:  # the same route on a patient of the care team
            for role in sorted(CARE_TEAM_BOUND):
                found = probe(who, case, role, fx, fx.team, expected_for(case, role, True))
                if found:
                    failures.append(found)
    assert not failures, f"{len(failures)} access-matrix mismatches:\n" + "\n".join(failures)


def _refusals(factory: Any) -> int:
    with factory() as s:
        return (
            s.scalar(
                select(func.count())
                .select_from(AuditRecord)
                .where(AuditRecord.outcome == "refused")
            )
            or 0
        )


def test_every_refusal_of_the_matrix_is_written_to_the_audit_log_once(app, staff, clients, factory):
    """ASVS 5.0 V16.3.2 (V8.2.x in the table): each 403 of the matrix, on every route and for
    every role refused, leaves exactly one refused record in the audit log, also where a page
    shows the error page after its use case's savepoint was rolled back with the whole
    request."""
    fx = build_fixture(factory, staff)
    who = Principals(app, staff, clients)
    failures: list[str] = []
    for case in MATRIX:
        for role in Role:
            if expected_for(case, role, False) is not Outcome.DENIED:
                continue
            before = _refusals(factory)
            found = probe(who, case, role, fx, fx.other, Outcome.DENIED)
            written = _refusals(factory) - before
            if found or written != 1:
                failures.append(f"{case.name} as {_who(role)}: {found or ''} records {written}")
    assert not failures, f"{len(failures)} refusals not recorded once:\n" + "\n".join(failures)


STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# What a forged request gets, in either language of the staff's accounts.
CSRF_REFUSAL = ("nothing was saved", "nic nie zostało zapisane")


def _row_counts(factory: Any) -> dict[str, int]:
    with factory() as s:
        return {
            t.name: s.scalar(select(func.count()).select_from(t)) or 0
            for t in Base.metadata.sorted_tables
        }


def test_every_state_changing_route_refuses_a_missing_or_forged_csrf_token(
    app, staff, clients, factory
):
    """ASVS 5.0 V3.5.1 (CSRF), on every route: each POST, PATCH and DELETE of the matrix, sent
    by a signed-in user whose role may use it (on a patient of their care team where that
    matters) with the body the matrix sends, but without the CSRF token or with a forged one,
    is refused with 403 and the "nothing was saved" message, and no table gains or loses a
    row. The access matrix shows that the same requests with the token get through."""
    fx = build_fixture(factory, staff)
    who = Principals(app, staff, clients)
    cases = [case for case in MATRIX if case.method in STATE_CHANGING]
    routes = {key for key in app_routes(app) if key[0] in STATE_CHANGING}
    assert {case.key for case in cases} == routes
    failures: list[str] = []
    for case in cases:
        role = min(case.allowed, key=_n) if case.allowed else None
        world = fx.team if role in CARE_TEAM_BOUND else fx.other
        for label, token in (("no token", ""), ("a forged token", "forged-" + "x" * 32)):
            client = who.client(role, case.fresh)  # signing in writes rows of its own
            kwargs = case.body(role, fx, world) if case.body else {}
            before = _row_counts(factory)
            r = client.request(
                case.method,
                url_for(case, role, fx, world),
                headers={"X-CSRF-Token": token},
                follow_redirects=False,
                **kwargs,
            )
            changed = {
                table: (n, after)
                for (table, n), after in zip(
                    before.items(), _row_counts(factory).values(), strict=True
                )
                if n != after
            }
            refused = r.status_code == 403 and any(text in r.text for text in CSRF_REFUSAL)
            if not refused or changed:
                failures.append(
                    f"{case.name} as {_who(role)} with {label}: {r.status_code} "
                    f"{r.text[:120]!r}, rows changed {changed}"
                )
    assert not failures, f"{len(failures)} CSRF failures:\n" + "\n".join(failures)


def test_lists_show_a_physiotherapist_only_the_patients_of_their_care_team(
    app, staff, clients, factory
):
    """V8.2.2 for collections: search results are filtered, not just single records."""
    fx = build_fixture(factory, staff)
    physio, nurse = clients(Role.PHYSIOTHERAPIST), clients(Role.NURSE)
    seen = {p["id"] for p in physio.get("/api/v1/patients").json()["items"]}
    assert seen == {fx.team.patient}
    assert {p["id"] for p in nurse.get("/api/v1/patients").json()["items"]} == {
        fx.other.patient,
        fx.team.patient,
    }
    page = physio.get("/patients")
    assert page.status_code == 200
    assert f'href="/patients/{fx.team.patient}"' in page.text
    assert f'href="/patients/{fx.other.patient}"' not in page.text


def _refusal_shown(r: Any) -> str:
    """What a refusal tells its reader: the problem's title and detail, or the error page's
    message (without the per-answer reference id or the page's nonces)."""
    if r.headers.get("content-type", "").startswith("application/problem+json"):
        problem = r.json()
        return f"{problem.get('title')}: {problem.get('detail')}"
    start = r.text.find('role="alert"')
    return r.text[start : r.text.find("</section>", start)] if start >= 0 else r.text[:300]


def test_a_physiotherapist_cannot_tell_a_missing_record_from_another_teams(
    app, staff, clients, factory
):
    """ASVS V8.2.2: on every route that names a patient's record, a number that belongs to
    no record answers a care-team-bound role exactly as a record of a patient not on their
    team does (status and words). A 404 for one and a 403 for the other would let them
    enumerate which numbers are the clinic's patients and episodes."""
    fx = build_fixture(factory, staff)
    nowhere = World(
        patient=10**9,
        episodes=dict.fromkeys(fx.other.episodes, 10**9),
        name=fx.other.name,
        data=fx.other.data,
    )
    who = Principals(app, staff, clients)
    failures: list[str] = []
    for case in (c for c in MATRIX if c.record_level):
        for role in sorted(CARE_TEAM_BOUND):
            answers = []
            for world in (fx.other, nowhere):
                client = who.client(role, case.fresh)
                kwargs = case.body(role, fx, world) if case.body else {}
                r = client.request(
                    case.method, url_for(case, role, fx, world), follow_redirects=False, **kwargs
                )
                answers.append((r.status_code, _refusal_shown(r)))
            if answers[0] != answers[1] or answers[0][0] != 403:
                failures.append(f"{case.name} as {_who(role)}: {answers[0]} but {answers[1]}")
    assert not failures, f"{len(failures)} routes tell them apart:\n" + "\n".join(failures)


# --- field level: clinical free text ---------------------------------------------------------

# One marker per declared clinical free-text field (auth/fields.py), stored in the fixture.
MARKERS = {
    ("consultation", "presenting_complaint"): "MKcomplaint Low back pain at night",
    ("consultation", "prior_treatments"): "MKprior Two epidural steroid injections",
    ("consultation", "medications"): "MKmeds pregabalin 75 mg twice daily",
    ("consultation", "change_reason"): "MKchange Imaging re-read by the radiologist",
    ("episode_event", "reason"): "MKevent Patient moved abroad, treatment stopped",
    ("eligibility_decision", "override_justification"): (
        "MKjustify Infection treated and resolved; BMI reviewed with the anaesthetist."
    ),
    ("red_flag_screening", "clearance_note"): (
        "MKclear Reassessed: no saddle anaesthesia, bladder normal, MRI reviewed."
    ),
    ("consent", "withdrawn_reason"): "MKwithdraw Afraid of the bone-marrow harvest",
}
# What a clinician is shown somewhere (the rest is kept in the record but shown on no route).
SHOWN_TO_CLINICIANS = {
    ("consultation", "presenting_complaint"),  # urgent referral letter
    ("episode_event", "reason"),  # timelines
    ("eligibility_decision", "override_justification"),  # episode page, decision API
    ("consent", "withdrawn_reason"),  # episode page, consent PDF
}


def build_marked_world(factory: Any, staff: Any) -> tuple[Fixture, World]:
    fx = build_fixture(factory, staff)
    coordinator, doctor = staff.actor(Role.COORDINATOR), staff.actor(Role.DOCTOR)
    consultation = good_consultation(
        presenting_complaint=MARKERS[("consultation", "presenting_complaint")],
        prior_treatments=MARKERS[("consultation", "prior_treatments")],
        medications=MARKERS[("consultation", "medications")],
    )
    with unit_of_work(factory) as s:
        pid = patients.register_patient(
            s,
            coordinator,
            valid_patient(
                id_type="passport",
                national_id="PMARK01",
                id_country="DE",
                given_name="Marked",
                family_name="Patient",
            ),
        ).id
        ids = {
            key: episodes.open_episode(s, coordinator, pid, code, "lumbar").id
            for key, code in EPISODES.items()
        }
        for key in ("eligible", "to_consent", "consented"):
            eligibility.assess(s, doctor, ids[key], consultation, red_flags())
        eligibility.assess(
            s,
            doctor,
            ids["eligible"],
            consultation,
            red_flags(),
            change_reason=MARKERS[("consultation", "change_reason")],
        )
        eligibility.assess(
            s,
            doctor,
            ids["not_eligible"],
            good_consultation(**(consultation | {"active_infection": True})),
            red_flags(),
        )
        eligibility.override(
            s,
            doctor,
            ids["not_eligible"],
            MARKERS[("eligibility_decision", "override_justification")],
        )
        eligibility.assess(s, doctor, ids["red_flag"], consultation, red_flags(True))
        eligibility.assess(s, doctor, ids["to_assess"], consultation, red_flags(True))
        eligibility.clear_red_flag(
            s, doctor, ids["to_assess"], MARKERS[("red_flag_screening", "clearance_note")]
        )
        consents.record_consent(
            s,
            coordinator,
            ids["consented"],
            method="tablet_signature",
            signed_name="Marked Patient",
            confirmed=True,
            language="en",
        )
        consents.withdraw_consent(
            s, coordinator, ids["consented"], MARKERS[("consent", "withdrawn_reason")]
        )
        episodes.advance(
            s,
            coordinator,
            ids["referred"],
            Step.CANCEL,
            episodes.EpisodeState.CANCELLED,
            reason=MARKERS[("episode_event", "reason")],
        )
    return fx, World(pid, ids, "Marked Patient", {})


def _text_of(r: Any) -> str:
    if r.headers.get("content-type", "").startswith("application/pdf"):
        from io import BytesIO

        from pypdf import PdfReader

        return " ".join(p.extract_text() or "" for p in PdfReader(BytesIO(r.content)).pages)
    return r.text


def _everything_readable(client: Any, role: Role, fx: Fixture, w: World) -> str:
    """Every GET route the role may call, on every episode of the patient, as one text."""
    seen: list[str] = []
    for case in MATRIX:
        if case.method != "GET" or role not in case.allowed or case.fresh:
            continue
        urls = {
            url_for(
                Case(case.method, case.path, case.allowed, case.anonymous, episode=key), role, fx, w
            )
            for key in (EPISODES if "{episode_id}" in case.path else ["referred"])
        }
        for url in sorted(urls):
            r = client.get(url, follow_redirects=False)
            assert r.status_code < 500, f"{url}: {r.status_code}"
            seen.append(_text_of(r))
    return "\n".join(seen)


def test_auditor_reads_no_clinical_free_text_on_any_route(app, staff, clients, factory):
    """V8.2.3 (field-level access): the fields auth/fields.py declares as clinical free text
    are withheld from the auditor on every API route, page and PDF the auditor may open, while
    the process facts stay visible; a clinician sees the same texts."""
    from regenspine.auth.fields import CLINICAL_FREE_TEXT

    declared = {(entity, f) for entity, fields in CLINICAL_FREE_TEXT.items() for f in fields}
    assert set(MARKERS) == declared, "give every declared clinical free-text field a marker"
    fx, w = build_marked_world(factory, staff)

    auditor_view = _everything_readable(clients(Role.AUDITOR), Role.AUDITOR, fx, w)
    leaked = [name for name, marker in MARKERS.items() if marker[:8] in auditor_view]
    assert not leaked, f"clinical free text shown to the auditor: {leaked}"
    assert "withheld: clinical free text is not shown to your role" in auditor_view
    assert "Marked Patient" in auditor_view  # the process facts are still there

    doctor_view = _everything_readable(clients(Role.DOCTOR), Role.DOCTOR, fx, w)
    shown = {name for name, marker in MARKERS.items() if marker[:8] in doctor_view}
    assert shown >= SHOWN_TO_CLINICIANS, f"missing for the doctor: {SHOWN_TO_CLINICIANS - shown}"
    assert "withheld: clinical free text" not in doctor_view


def test_api_says_which_fields_were_withheld(app, staff, clients, factory):
    """V8.2.3: the API marks withheld text instead of pretending there was none."""
    fx, w = build_marked_world(factory, staff)
    auditor, doctor = clients(Role.AUDITOR), clients(Role.DOCTOR)
    url = f"/api/v1/episodes/{w.episodes['not_eligible']}/decision"
    seen = auditor.get(url).json()
    assert seen["override_justification"] is None
    assert seen["withheld"] == ["override_justification"]
    assert seen["overridden_by_name"]  # who overrode, and when, stay visible
    full = doctor.get(url).json()
    assert full["override_justification"].startswith("MKjustify")
    assert full["withheld"] == []
    cancelled = auditor.get(f"/api/v1/episodes/{w.episodes['referred']}").json()
    assert cancelled["withheld"] == ["events.reason"]
    assert [e["reason"] for e in cancelled["events"]] == [None] * len(cancelled["events"])
    assert cancelled["state"] == "cancelled"
