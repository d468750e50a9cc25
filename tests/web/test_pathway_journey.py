"""The pathway in the browser: a coordinator and a doctor take a referred patient to consent;
a cauda equina flag ends in urgent referral at the top of the medical director's work list."""

from __future__ import annotations

import re
from datetime import date

import pytest
from playwright.sync_api import expect

from regenspine.auth.permissions import Role
from regenspine.db import session_factory, unit_of_work
from regenspine.eligibility.red_flags import items_for_region
from regenspine.episodes import service as episodes
from regenspine.episodes.states import EpisodeState, Step
from tests.conftest import person
from tests.web.conftest import by_label, login, screenshot
from tests.web.test_patient_journey import register

pytestmark = pytest.mark.browser


def _open_episode(page, base_url: str, born: date, serial: int, given: str) -> str:
    chart = register(
        page,
        base_url,
        person(
            given,
            "Wiśniewska",
            born,
            serial,
            "female",
        ),
    )
    page.goto(base_url + chart)
    panel = page.locator("form[action$='/episodes']")
    expect(panel).to_be_visible()  # loaded into the chart by HTMX
    panel.get_by_label("Condition").select_option("disc_protrusion")
    panel.get_by_label("Region").select_option("lumbar")
    panel.get_by_role("button", name="Open treatment episode").click()
    page.wait_for_url(re.compile(r"/episodes/\d+$"))
    expect(page.locator(".chart-head .badge")).to_have_text("Referred")
    return re.sub(r"^https?://[^/]+", "", page.url)


def _assess(
    page,
    base_url: str,
    episode: str,
    positive: str | None = None,
    *,
    pain_weeks: int = 52,
    physiotherapy_weeks: int = 12,
    change_reason: str | None = None,
) -> None:
    page.goto(base_url + episode + "/assess")
    if change_reason is not None:
        by_label(page, "Reason for the change").fill(change_reason)
    by_label(page, "Presenting complaint").fill("Low back pain for a year, worse on sitting")
    by_label(page, "Pain duration (weeks)").fill(str(pain_weeks))
    by_label(page, "Physiotherapy so far (weeks)").fill(str(physiotherapy_weeks))
    by_label(page, "BMI").fill("26")
    by_label(page, "Modality").select_option("mri")
    page.get_by_label("Pfirrmann grade L4-L5").select_option("3")
    page.get_by_label("Herniation L4-L5").select_option("protrusion")
    page.get_by_label("Disc height loss % L4-L5").fill("20")
    by_label(page, "Imaging date").fill("2026-10-01")
    page.get_by_label("Diagnosis 1").select_option("disc_protrusion")
    page.locator("input[name='dx.0.levels'][value='L4-L5']").check()
    page.locator("input[name='target_levels'][value='L4-L5']").check()
    for item in items_for_region("lumbar"):
        answer = "yes" if item.id == positive else "no"
        page.locator(f"input[name='rf.{item.id}'][value='{answer}']").check()
    screenshot(page, "assessment-form.png")
    page.get_by_role("button", name="Save and evaluate eligibility").click()
    page.wait_for_url(re.compile(r"/episodes/\d+$"))


def test_coordinator_and_doctor_take_a_new_patient_from_referral_to_consent(
    browser, live_server, base_url
):
    coordinator = browser.new_context(viewport={"width": 1280, "height": 900})
    doctor = browser.new_context(viewport={"width": 1280, "height": 900})
    c_page, d_page = coordinator.new_page(), doctor.new_page()
    try:
        login(c_page, base_url, live_server.staff.username("coordinator"))
        episode = _open_episode(c_page, base_url, date(1970, 3, 3), 321, "Zofia")

        login(d_page, base_url, live_server.staff.username("doctor"))
        d_page.goto(base_url + "/worklist")
        expect(d_page.locator(f"a[href='{episode}']")).to_be_visible()
        _assess(d_page, base_url, episode)
        expect(d_page.locator(".chart-head .badge")).to_have_text("Eligible")
        expect(d_page.get_by_text("Rules that fired")).to_be_visible()
        screenshot(d_page, "episode-eligible.png")

        c_page.goto(base_url + "/worklist")
        expect(c_page.locator(f"a[href='{episode}']")).to_be_visible()
        c_page.goto(base_url + episode + "/consent-document?lang=en")
        expect(
            c_page.get_by_role("heading", level=2, name=re.compile("risk", re.I)).first
        ).to_be_visible()
        screenshot(c_page, "consent-document.png")
        c_page.goto(base_url + episode)
        c_page.get_by_label("Patient's full name, typed by the patient").fill("Zofia Wiśniewska")
        c_page.get_by_label(re.compile("The patient has read the document")).check()
        c_page.get_by_role("button", name="Record consent").click()
        expect(c_page.locator(".chart-head .badge")).to_have_text("Consented")
        expect(c_page.locator("ol.timeline li")).to_have_count(4)
        screenshot(c_page, "episode-consented.png")
    finally:
        coordinator.close()
        doctor.close()


def test_a_cauda_equina_flag_ends_in_urgent_referral_on_the_directors_work_list(
    page, browser, live_server, base_url
):
    login(page, base_url, live_server.staff.username("doctor"))
    episode = _open_episode(page, base_url, date(1965, 7, 7), 654, "Halina")
    cauda = next(i.id for i in items_for_region("lumbar") if i.category == "cauda_equina")
    _assess(page, base_url, episode, positive=cauda)
    expect(page.locator(".chart-head .badge")).to_have_text("Urgent referral")
    expect(page.get_by_role("alert").first).to_contain_text("urgent referral")
    expect(page.get_by_role("button", name="Record consent")).to_have_count(0)
    expect(page.get_by_role("button", name="Override eligibility")).to_have_count(0)
    screenshot(page, "episode-urgent-referral.png")
    letter = page.get_by_role("link", name="Urgent referral letter (PDF)")
    response = page.request.get(base_url + letter.get_attribute("href"))
    assert response.status == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.body().startswith(b"%PDF-")

    director = browser.new_context(viewport={"width": 1280, "height": 900})
    d_page = director.new_page()
    try:
        login(d_page, base_url, live_server.staff.username("medical_director"))
        d_page.goto(base_url + "/worklist")
        first = d_page.locator("tbody tr").first
        expect(first).to_have_class(re.compile("urgent"))
        screenshot(d_page, "worklist-director.png")
    finally:
        director.close()


PROCEDURE_DAY = [
    (Role.COORDINATOR, Step.SCHEDULE, EpisodeState.SCHEDULED),
    (Role.DOCTOR, Step.HARVEST, EpisodeState.HARVESTED),
    (Role.LAB_TECHNICIAN, Step.PROCESS, EpisodeState.PROCESSED),
    (Role.LAB_TECHNICIAN, Step.RELEASE, EpisodeState.RELEASED),
    (Role.DOCTOR, Step.ADMINISTER, EpisodeState.ADMINISTERED),
    (Role.COORDINATOR, Step.START_FOLLOW_UP, EpisodeState.FOLLOW_UP),
]


def test_a_doctor_overrides_the_follow_up_review_and_starts_another_cycle(
    page, live_server, base_url
):
    """At follow-up a review the rules send for the doctor's review offers the override on the
    episode page; the episode stays in follow-up, and "Start another cycle" then works."""
    login(page, base_url, live_server.staff.username("doctor"))
    episode = _open_episode(page, base_url, date(1968, 4, 4), 765, "Teresa")
    _assess(page, base_url, episode)
    page.get_by_label("Patient's full name, typed by the patient").fill("Teresa Wiśniewska")
    page.get_by_label(re.compile("The patient has read the document")).check()
    page.get_by_role("button", name="Record consent").click()
    expect(page.locator(".chart-head .badge")).to_have_text("Consented")
    episode_id = int(episode.rsplit("/", 1)[1])
    with unit_of_work(session_factory(live_server.database_url)) as s:
        for role, step, target in PROCEDURE_DAY:
            episodes.take_step(s, live_server.staff.actor(role), episode_id, step, target)

    _assess(
        page,
        base_url,
        episode,
        pain_weeks=4,
        physiotherapy_weeks=0,
        change_reason="Follow-up review at three months",
    )
    expect(page.locator(".chart-head .badge")).to_have_text("Follow-up")
    # A step that can only be refused is not offered.
    expect(page.get_by_role("button", name="Start another cycle")).to_have_count(0)

    page.get_by_label(re.compile("Written justification")).fill(
        "Seen in person: the pain is back at the treated level; a second cycle is fair."
    )
    screenshot(page, "episode-follow-up-override.png")
    page.get_by_role("button", name="Override eligibility").click()
    expect(page.locator(".chart-head .badge")).to_have_text("Follow-up")
    expect(page.get_by_text(re.compile("overridden by"))).to_be_visible()
    page.get_by_role("button", name="Start another cycle").click()
    expect(page.locator(".chart-head .badge")).to_have_text("Eligible")
    expect(page.get_by_role("button", name="Record consent")).to_be_visible()
    screenshot(page, "episode-second-cycle.png")
