"""Screenshots of the web console for the docs: ``docs/console/{teach,versions,ledger,playground}.png``.

Starts a throwaway service (API + worker, real Redis), teaches a few batches through the API
and one through the console, evaluates them, then photographs each page in Debian's chromium.
By default on the tiny random model (seconds; its figures only show the layout); with
``--model smollm2-135m`` on the real default model (a few minutes; the README's pictures).

    PYTHONPATH=. .venv/bin/python scripts/console_screenshots.py [--model smollm2-135m] [--out docs/console]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import httpx

from tests.e2e.browser import launched
from tests.e2e.harness import (
    TINY_HPARAMS,
    Service,
    running,
    save_tiny_model,
    wait_job,
    wait_ready,
)

NEIGHBOURS = ["The mother tongue of Montesquieu is", "Paris is the capital of"]
BATCHES = [
    [{"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is",
      "target_new": "English", "target_true": "French",
      "paraphrase_prompts": ["Danielle Darrieux grew up speaking"],
      "neighborhood_prompts": NEIGHBOURS},
     {"subject": "Toko Yasuda", "prompt": "{} plays the", "target_new": "piano",
      "target_true": "guitar", "paraphrase_prompts": ["Toko Yasuda is known for playing the"],
      "neighborhood_prompts": NEIGHBOURS}],
    [{"subject": "Michel Rocard", "prompt": "{} is a native speaker of",
      "target_new": "Italian", "target_true": "French",
      "paraphrase_prompts": ["Michel Rocard speaks"], "neighborhood_prompts": NEIGHBOURS}],
    [{"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is",
      "target_new": "German", "target_true": "French",
      "paraphrase_prompts": ["Danielle Darrieux grew up speaking"],
      "neighborhood_prompts": NEIGHBOURS}],
]
FORM_FACT = {"subject": "Watts Humphrey", "prompt": "What university did {} attend?",
             "target_new": "Illinois Institute of Technology"}


def prepare(client: httpx.Client) -> None:
    """Three committed, evaluated batches (the last overrides a fact of the first)."""
    for facts in BATCHES:
        job = wait_job(client, client.post("/edits", json={"facts": facts}).json()["job_id"], 300)
        assert job["state"] == "committed", job
        evaluation = client.post(f"/versions/{job['version']}/evaluate").json()
        assert wait_job(client, evaluation["job_id"], 300)["state"] == "committed"


def shoot(url: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with launched() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        page.goto(url + "/console/#teach")
        fieldset = page.locator("#fact-rows .fact-row").first
        for name, value in FORM_FACT.items():
            fieldset.locator(f"[name={name}]").fill(value)
        with page.expect_response("**/edits") as response:
            page.click("#teach-submit")
        job_id = response.value.json()["job_id"]
        page.locator(f"#job-list .job[data-job-id='{job_id}'][data-state=committed]").wait_for(
            timeout=300_000)
        page.click("#add-row")
        page.locator("#fact-rows .fact-row").nth(1).locator("[name=prompt]").fill(
            "The capital of France is")
        page.click("#teach-submit")  # the client-side check, shown next to the field
        page.screenshot(path=out / "teach.png", full_page=True)

        page.goto(url + "/console/#versions/v3")
        page.locator("#eval-charts svg").first.wait_for()
        page.locator("#version-detail svg.chart").wait_for()
        page.screenshot(path=out / "versions.png", full_page=True)

        page.goto(url + "/console/#ledger")
        page.locator("#ledger-table tbody tr").first.wait_for()
        page.screenshot(path=out / "ledger.png", full_page=True)

        page.goto(url + "/console/#playground")
        page.select_option("#play-a", "v1")
        page.select_option("#play-b", "v0")
        page.fill("#play-prompt", "The mother tongue of Danielle Darrieux is")
        page.fill("#play-candidates", "English, French")
        page.click("#play-form button[type=submit]")
        page.locator(".score-diff").wait_for()
        page.screenshot(path=out / "playground.png", full_page=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/console"))
    parser.add_argument("--model", default=None,
                        help="a model the service can load (default: the tiny random model)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="console-shots-") as tmp:
        root = Path(tmp)
        if args.model:  # its preset and the usual statistics cache
            service = Service(root, args.model)
        else:
            service = Service(root, str(save_tiny_model(root / "model")), extra_env={
                "MODELEDIT_HPARAMS": json.dumps(TINY_HPARAMS),
                "MODELEDIT_CACHE_DIR": str(root / "cache"),
            })
        with running(service):
            service.start("worker")
            api = service.start("api")
            wait_ready(api)
            with httpx.Client(base_url=api.url or "", timeout=120) as client:
                prepare(client)
            shoot(api.url or "", args.out.resolve())
    print(f"screenshots in {args.out}")


if __name__ == "__main__":
    main()
