"""The web console in a real browser (Playwright + Debian's chromium) against a live API and
worker on the tiny random model.

One service for the module (an open API process, a second one with tokens, one worker), so
the first edit's statistics are computed once; tests run in file order and build on each
other's versions: teach (v1) -> playground -> rollback via the versions page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.browser import launched
from tests.e2e.harness import TINY_HPARAMS, Service, running, wait_ready

try:
    from playwright.sync_api import Page, expect

    # Every `expect` polls the page until its condition holds; the deadline only bounds a
    # failure. Playwright's default (5 s) failed under a loaded CI machine, so it is wide.
    expect.set_options(timeout=60_000)
except ImportError:  # the browser fixture skips (or fails on CI) and says why
    Page = Any

API_TOKEN = "api-SECRET-c0ns0le"
READ_TOKEN = "read-SECRET-c0ns0le"
XSS = "<img src=x onerror=alert(1)>"
FACT = {"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is",
        "target_new": "English", "target_true": "French"}
COMMIT_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path,
            tiny_cache_dir: Path) -> Iterator[dict[str, str]]:
    """URLs of an open API and a token-protected one, sharing one worker and data dir."""
    root = tmp_path_factory.mktemp("console")
    svc = Service(root, str(tiny_model_dir), extra_env={
        "MODELEDIT_HPARAMS": json.dumps(TINY_HPARAMS),
        "MODELEDIT_CACHE_DIR": str(tiny_cache_dir),
    })
    with running(svc):
        svc.start("worker")
        open_api = svc.start("api")
        secured = svc.start("api", MODELEDIT_API_TOKEN=API_TOKEN, MODELEDIT_READ_TOKEN=READ_TOKEN)
        wait_ready(open_api)
        wait_ready(secured)
        yield {"open": open_api.url or "", "secured": secured.url or ""}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched() as chromium:
        yield chromium


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    """A fresh page that records alerts, script errors and every URL it requested."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.alerts = []  # type: ignore[attr-defined]
    page.errors = []  # type: ignore[attr-defined]
    page.urls = []  # type: ignore[attr-defined]
    page.on("dialog", lambda d: (page.alerts.append(d.message), d.dismiss()))  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: page.errors.append(str(e)))  # type: ignore[attr-defined]
    page.on("request", lambda r: page.urls.append(r.url))  # type: ignore[attr-defined]
    page.set_default_timeout(60_000)
    yield page
    assert page.alerts == [], page.alerts  # type: ignore[attr-defined]
    assert page.errors == [], page.errors  # type: ignore[attr-defined]
    context.close()


def fill_fact(page: Page, row: int, fact: dict[str, str]) -> None:
    fieldset = page.locator("#fact-rows .fact-row").nth(row)
    for name, value in fact.items():
        fieldset.locator(f"[name={name}]").fill(value)


def test_console_headers_and_redirect(service: dict[str, str]) -> None:
    root = httpx.get(service["open"] + "/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/console/"
    console = httpx.get(service["open"] + "/console/")
    assert console.status_code == 200
    csp = console.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert console.headers["x-content-type-options"] == "nosniff"
    script = httpx.get(service["open"] + "/console/js/main.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "content-security-policy" in script.headers
    api = httpx.get(service["open"] + "/versions")  # the API's own headers are unchanged
    assert "content-security-policy" not in api.headers


INLINE_SCRIPT_PROBE = """() => new Promise((resolve) => {
  document.addEventListener('securitypolicyviolation', (e) => resolve(e.violatedDirective));
  const script = document.createElement('script');
  script.textContent = 'window.inlineRan = true';
  document.body.append(script);
  setTimeout(() => resolve(window.inlineRan ? 'ran' : 'silent'), 15000);
})"""


def test_bad_prompt_is_refused_in_the_form(service: dict[str, str], page: Page) -> None:
    response = page.goto(service["open"] + "/console/#teach")
    assert response is not None
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert page.evaluate(INLINE_SCRIPT_PROBE) == "script-src-elem"  # inline scripts are refused
    expect(page.locator("#method-select option[value=fe]")).to_have_count(1)  # from OpenAPI
    fill_fact(page, 0, {**FACT, "prompt": "The mother tongue of Danielle Darrieux is"})
    page.click("#teach-submit")
    errors = page.locator("#teach-errors")
    expect(errors).to_contain_text("facts[0].prompt: must contain exactly one '{}'")
    expect(page.locator(".fact-row [name=prompt]")).to_have_class(re.compile("invalid"))
    assert not [u for u in page.urls if u.endswith("/edits")], "the client check must not POST"  # type: ignore[attr-defined]

    # The server's own check: a valid form whose request is rewritten on the way out.
    fill_fact(page, 0, FACT)

    def break_prompt(route: Any) -> None:
        body = json.loads(route.request.post_data)
        body["facts"][0]["prompt"] = "no slot here"
        route.continue_(post_data=json.dumps(body))

    page.route("**/edits", break_prompt)
    page.click("#teach-submit")
    expect(errors).to_contain_text("(HTTP 422)")
    expect(errors).to_contain_text("facts[0].prompt: must contain exactly one '{}' where the "
                                   "subject goes (found 0)")
    expect(page.locator("#job-list .job")).to_have_count(0)


BAD_FACTS = [
    {**FACT, "prompt": "The mother tongue of {} is {}"},
    {**FACT, "prompt": "The {mother} tongue of {} is"},
    {**FACT, "subject": "   "},
    {**FACT, "subject": ""},
    {**FACT, "subject": "Danielle {}"},
    {**FACT, "target_new": "Eng\u0007lish"},
    {**FACT, "target_true": "\U0001F600 then\ta tab"},
    {**FACT, "target_new": "x" * 2001},
    {key: value for key, value in FACT.items() if key != "target_new"},
    {**FACT, "paraphrase_prompts": ["fine", " "]},
]


def test_client_checks_mirror_the_api(service: dict[str, str], page: Page) -> None:
    """validate.js gives the API's own first error (field and message) for each bad fact."""
    page.goto(service["open"] + "/console/#teach")
    for fact in BAD_FACTS:
        response = httpx.post(service["open"] + "/edits", json={"facts": [fact]})
        assert response.status_code == 422, response.text
        server = response.json()["errors"][0]
        client = page.evaluate(
            "async (fact) => (await import('./js/validate.js')).checkFacts([fact])[0]", fact)
        assert client == server, fact


def test_pasted_csv_and_json_become_rows(service: dict[str, str], page: Page) -> None:
    page.goto(service["open"] + "/console/#teach")
    page.click("#paste-box summary")
    page.fill("#paste-input", 'subject,prompt,target_new,paraphrase_prompts\n'
              '"Rocard, Michel",{} speaks,Italian,He speaks|Rocard talks\n'
              'Toko Yasuda,{} plays the,piano,\n')
    page.click("#paste-load")
    rows = page.locator("#fact-rows .fact-row")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator("[name=subject]")).to_have_value("Rocard, Michel")
    expect(rows.nth(0).locator("[name=paraphrase_prompts]")).to_have_value(
        "He speaks\nRocard talks")
    page.fill("#paste-input", json.dumps({"facts": [FACT]}))
    page.click("#paste-load")
    expect(rows).to_have_count(1)
    expect(rows.nth(0).locator("[name=target_true]")).to_have_value("French")
    page.fill("#paste-input", "[{]")
    page.click("#paste-load")
    expect(page.locator("#paste-msg")).to_contain_text("JSON")
    expect(rows).to_have_count(1)


def test_a_failed_job_shows_its_reason(service: dict[str, str], page: Page) -> None:
    """The worker's reason, as GET /edits/{id} reports it (answered here by the test, since a
    real edit of valid facts does not fail on demand), is shown as text on the job card."""
    reason = "the active version moved 3 times while computing; submit the batch again <b>"
    job = {"job_id": "j-failing", "kind": "edit", "state": "failed", "version": None,
           "error": reason, "progress": {"stage": "z", "fraction": 0.4}, "n_facts": 1}
    page.route("**/edits", lambda route: route.fulfill(
        status=202, json={"job_id": "j-failing", "state": "queued", "created": True}))
    page.route("**/edits/j-failing", lambda route: route.fulfill(json=job))
    page.goto(service["open"] + "/console/#teach")
    fill_fact(page, 0, FACT)
    page.click("#teach-submit")
    card = page.locator("#job-list .job[data-job-id=j-failing]")
    expect(card).to_have_attribute("data-state", "failed")
    expect(card.locator(".error")).to_have_text(f"failed: {reason}")


def test_teach_watch_commit_and_xss_shows_literally(service: dict[str, str], page: Page) -> None:
    page.goto(service["open"] + "/console/#teach")
    page.click("#add-row")
    fill_fact(page, 0, FACT)
    fill_fact(page, 1, {"subject": "Toko Yasuda", "prompt": "{} plays the", "target_new": XSS})
    page.click("#teach-submit")
    card = page.locator("#job-list .job").first
    expect(card).to_be_visible()
    expect(card.locator(".stage")).not_to_be_empty()
    expect(card).to_have_attribute("data-state", "committed", timeout=COMMIT_TIMEOUT_MS)
    expect(card).to_contain_text("committed as v1")
    expect(card.locator("progress")).to_have_js_property("value", 1)

    card.locator("a", has_text="v1").click()
    detail = page.locator("#version-detail")
    expect(detail.locator("table.facts")).to_contain_text(XSS)
    assert detail.locator("table.layers tbody tr").count() >= 1
    expect(detail.locator("svg.chart")).to_have_count(1)  # residual ratio per layer
    expect(page.locator("#timeline li.is-active")).to_have_attribute("data-version", "v1")
    assert page.locator("#version-detail img").count() == 0

    page.goto(service["open"] + "/console/#ledger")
    page.fill("#ledger-q", "onerror")
    page.click("#ledger-form button[type=submit]")
    row = page.locator("#ledger-table tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(XSS)
    expect(row).to_contain_text("v1")
    expect(row).to_contain_text("current")
    assert page.locator("#ledger-table img").count() == 0


def test_playground_shows_the_score_change(service: dict[str, str], page: Page) -> None:
    page.goto(service["open"] + "/console/#playground")
    expect(page.locator("#play-a")).to_have_value("v1")  # default: active and its parent
    expect(page.locator("#play-b")).to_have_value("v0")
    page.fill("#play-prompt", FACT["prompt"].replace("{}", FACT["subject"]))
    page.fill("#play-candidates", "English, French")
    page.click("#play-form button[type=submit]")
    change = page.locator(".score-diff tr[data-candidate=English] td[data-change]")
    expect(change).to_be_visible(timeout=60_000)
    assert float(change.get_attribute("data-change") or "nan") > 0
    expect(page.locator("#play-col-a h3").first).to_have_text("Version v1")
    expect(page.locator("#play-col-b h3").first).to_have_text("Version v0")
    expect(page.locator("#play-col-a .generated")).not_to_be_empty()
    assert page.locator("#play-col-a svg.chart").count() == 2  # scores and top-10


def test_rollback_via_the_versions_page(service: dict[str, str], page: Page) -> None:
    page.goto(service["open"] + "/console/#versions/v0")
    button = page.get_by_role("button", name="Roll back to v0")
    button.click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("v0 becomes the active version")
    page.click("#confirm-cancel")
    expect(dialog).to_be_hidden()
    assert httpx.get(service["open"] + "/versions").json()["active"] == "v1"

    button.click()
    page.click("#confirm-ok")
    expect(page.locator("#timeline li.is-active")).to_have_attribute("data-version", "v0")
    assert httpx.get(service["open"] + "/versions").json()["active"] == "v0"


def test_tokens_read_only_hides_mutations_and_stay_out_of_urls(
    service: dict[str, str], page: Page
) -> None:
    page.goto(service["secured"] + "/console/#versions/v1")
    expect(page.locator("#banner")).to_contain_text("needs a token to read")
    expect(page.locator("#scope-badge")).to_have_text("no access")

    page.fill("#token-input", READ_TOKEN)
    page.click("#token-form button[type=submit]")
    expect(page.locator("#scope-badge")).to_have_text("read-only")
    expect(page.locator("#version-detail h2")).to_contain_text("v1")
    expect(page.locator("#version-detail table.facts")).to_be_visible()
    expect(page.locator("#version-detail .actions a")).to_be_hidden()  # export needs writing
    assert page.locator("#version-detail .actions :is(button, a):visible").count() == 0
    page.goto(service["secured"] + "/console/#teach")
    expect(page.locator("#teach-form")).to_be_hidden()
    expect(page.locator("#teach-readonly")).to_be_visible()

    page.fill("#token-input", API_TOKEN)
    page.click("#token-form button[type=submit]")
    expect(page.locator("#scope-badge")).to_have_text("read · edit · admin")
    expect(page.locator("#teach-form")).to_be_visible()
    page.goto(service["secured"] + "/console/#versions/v1")  # the token survives in the tab
    expect(page.get_by_role("button", name="Roll forward to v1")).to_be_visible()
    export = page.get_by_role("link", name="Export checkpoint")
    expect(export).to_have_attribute("href", "/versions/v1/export")
    export.click()
    expect(page.locator("#confirm-dialog")).to_contain_text("downloads it as v1.tar")
    with page.expect_download() as download:
        page.click("#confirm-ok")
    assert download.value.suggested_filename == "v1.tar"

    urls = page.urls  # type: ignore[attr-defined]
    assert any("/versions" in u for u in urls)
    leaked = [u for u in urls if API_TOKEN in u or READ_TOKEN in u]
    assert leaked == []


def test_teach_page_follows_recent_jobs(service: dict[str, str], page: Page) -> None:
    """A job submitted elsewhere (or before a reload) shows up on the teach page and is followed
    to its end."""
    fact = {"subject": "Michel Rocard", "prompt": "{} is a native speaker of",
            "target_new": "Italian"}
    accepted = httpx.post(service["open"] + "/edits", json={"facts": [fact]}).json()
    page.goto(service["open"] + "/console/#teach")
    card = page.locator(f"#job-list .job[data-job-id='{accepted['job_id']}']")
    expect(card).to_be_visible()
    expect(card).to_have_attribute("data-state", "committed", timeout=COMMIT_TIMEOUT_MS)
    expect(card).to_contain_text("committed as v2")
    page.goto(service["open"] + "/console/#ledger")
    expect(page.locator("#ledger-summary")).to_contain_text("Facts known to v2 (active)")
    expect(page.locator("#ledger-table tbody tr")).to_have_count(1)  # v2 was taught on v0
