"""The console's job cards in a real browser: a cancelled job shows as cancelled, a caller who
may write gets a Cancel button that works, a read-only caller gets none.

The API runs without a worker, so a submitted job stays queued for as long as the test needs
(no race with the worker, no timing)."""

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


def fact(subject: str) -> dict[str, str]:
    return {"subject": subject, "prompt": "The mother tongue of {} is", "target_new": "English"}


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path,
            tiny_cache_dir: Path) -> Iterator[str]:
    svc = Service(tmp_path_factory.mktemp("console-jobs"), str(tiny_model_dir), extra_env={
        "MODELEDIT_HPARAMS": json.dumps(TINY_HPARAMS),
        "MODELEDIT_CACHE_DIR": str(tiny_cache_dir),
        "MODELEDIT_API_TOKEN": API_TOKEN,
        "MODELEDIT_READ_TOKEN": READ_TOKEN,
    })
    with running(svc):
        api = svc.start("api")
        wait_ready(api, worker=False)
        yield api.url or ""


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


def submit(api_url: str, subject: str) -> str:
    response = httpx.post(api_url + "/edits", json={"facts": [fact(subject)]},
                          headers={"Authorization": f"Bearer {API_TOKEN}"})
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
