"""The console in a real browser, by scope: a cancelled job shows as cancelled; the edit token
gets a Cancel button on its own jobs, the admin token on every job, a read-only caller on none;
admin actions (rollback, export) are hidden from the edit token; the audit page shows who moved
the active version.

The API runs without a worker until the last test, so a submitted job stays queued for as long
as a test needs (no race with the worker, no timing)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.browser import launched
from tests.e2e.harness import TINY_HPARAMS, Service, running, wait_ready

try:
    from playwright.sync_api import Page, expect

    expect.set_options(timeout=60_000)
except ImportError:  # the browser fixture skips (or fails on CI) and says why
    Page = Any

API_TOKEN = "api-SECRET-jobs"
READ_TOKEN = "read-SECRET-jobs"
ADMIN_TOKEN = "admin-SECRET-jobs"
COMMIT_TIMEOUT_MS = 180_000


def fact(subject: str) -> dict[str, str]:
    return {"subject": subject, "prompt": "The mother tongue of {} is", "target_new": "English"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path,
            tiny_cache_dir: Path) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("console-jobs"), str(tiny_model_dir), extra_env={
        "MODELEDIT_HPARAMS": json.dumps(TINY_HPARAMS),
        "MODELEDIT_CACHE_DIR": str(tiny_cache_dir),
        "MODELEDIT_API_TOKEN": f"alice:{API_TOKEN}",
        "MODELEDIT_READ_TOKEN": READ_TOKEN,
        "MODELEDIT_ADMIN_TOKEN": f"ops:{ADMIN_TOKEN}",
    })
    with running(svc):
        wait_ready(svc.start("api"), worker=False)
        yield svc


@pytest.fixture(scope="module")
def api_url(service: Service) -> str:
    return service.procs[0].url or ""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched() as chromium:
        yield chromium


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(60_000)
    yield page
    assert errors == []
    context.close()


def submit(api_url: str, subject: str, token: str = API_TOKEN, **extra: Any) -> str:
    response = httpx.post(api_url + "/edits", json={"facts": [fact(subject)], **extra},
                          headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def sign_in(page: Page, api_url: str, token: str) -> None:
    page.goto(api_url + "/console/#teach")
    page.fill("#token-input", token)
    page.click("#token-form button[type=submit]")


def test_cancel_from_the_card(api_url: str, page: Page) -> None:
    job_id = submit(api_url, "Paris")
    sign_in(page, api_url, API_TOKEN)
    page.reload()  # the recent jobs are listed with the token in place
    card = page.locator(f"#job-list .job[data-job-id='{job_id}']")
    expect(card).to_have_attribute("data-state", "queued")
    card.get_by_role("button", name="Cancel").click()
    expect(card).to_have_attribute("data-state", "cancelled")
    expect(card.locator(".badge")).to_have_text("cancelled")
    expect(card).to_contain_text("cancelled by")
    expect(card.get_by_role("button", name="Cancel")).to_have_count(0)
    body = httpx.get(f"{api_url}/edits/{job_id}",
                     headers={"Authorization": f"Bearer {READ_TOKEN}"}).json()
    assert body["state"] == "cancelled"


def test_read_only_sees_no_cancel(api_url: str, page: Page) -> None:
    job_id = submit(api_url, "Berlin")
    sign_in(page, api_url, READ_TOKEN)
    page.reload()
    card = page.locator(f"#job-list .job[data-job-id='{job_id}']")
    expect(card).to_have_attribute("data-state", "queued")
    expect(card.get_by_role("button", name="Cancel")).to_be_hidden()


def test_cancel_only_own_jobs_unless_admin(api_url: str, page: Page) -> None:
    theirs = submit(api_url, "Rome", ADMIN_TOKEN)
    mine = submit(api_url, "Tokyo")
    sign_in(page, api_url, API_TOKEN)
    expect(page.locator("#scope-badge")).to_have_text("read · edit")
    page.reload()
    expect(page.locator(f"#job-list .job[data-job-id='{mine}'] .job-cancel")).to_be_visible()
    other = page.locator(f"#job-list .job[data-job-id='{theirs}']")
    expect(other).to_have_attribute("data-state", "queued")
    expect(other.locator(".job-cancel")).to_be_hidden()
    sign_in(page, api_url, ADMIN_TOKEN)
    expect(page.locator("#scope-badge")).to_have_text("read · edit · admin")
    page.reload()
    expect(page.locator(f"#job-list .job[data-job-id='{theirs}'] .job-cancel")).to_be_visible()
    expect(page.locator(f"#job-list .job[data-job-id='{mine}'] .job-cancel")).to_be_visible()


def test_admin_actions_hidden_from_the_edit_token(api_url: str, page: Page) -> None:
    sign_in(page, api_url, API_TOKEN)
    expect(page.locator("#scope-badge")).to_have_text("read · edit")
    page.goto(api_url + "/console/#versions/v0")
    expect(page.locator("#version-detail h2")).to_contain_text("v0")
    expect(page.get_by_role("link", name="Export checkpoint")).to_be_hidden()
    sign_in(page, api_url, ADMIN_TOKEN)
    page.goto(api_url + "/console/#versions/v0")
    expect(page.get_by_role("link", name="Export checkpoint")).to_be_visible()


def test_audit_page_shows_who_moved_the_active_version(service: Service, api_url: str,
                                                       page: Page) -> None:
    """Last: starts the worker, which runs (or skips) the jobs the tests above left."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for job in httpx.get(api_url + "/edits", headers=headers).json():
        if job["state"] == "queued":
            httpx.post(f"{api_url}/edits/{job['job_id']}/cancel", headers=headers)
    job_id = submit(api_url, "Montesquieu", ADMIN_TOKEN,
                    gate={"min_efficacy": 0, "max_kl": 100})
    service.start("worker")
    sign_in(page, api_url, READ_TOKEN)
    page.reload()
    card = page.locator(f"#job-list .job[data-job-id='{job_id}']")
    expect(card).to_have_attribute("data-state", "committed", timeout=COMMIT_TIMEOUT_MS)
    version = httpx.get(f"{api_url}/edits/{job_id}", headers=headers).json()["version"]
    assert httpx.post(api_url + "/versions/v0/rollback", headers=headers).status_code == 200
    page.goto(api_url + "/console/#audit")
    rows = page.locator("#audit-table tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("rollback")
    expect(rows.nth(0)).to_contain_text("ops")
    expect(rows.nth(0)).to_contain_text(f"{version} → v0")
    expect(rows.nth(1)).to_contain_text("commit")
    expect(rows.nth(1)).to_contain_text(job_id)
    expect(page.locator("#page-audit")).not_to_contain_text(ADMIN_TOKEN)
