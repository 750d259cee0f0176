"""A batch is checked as a batch and in the model's tokens, through real HTTP, before a job is
accepted: contradictions are a 422 naming both facts, repeats are kept once, and a text, a fact
or a batch over its token limit is a 422 naming the field and the limit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import save_tiny_model
from tests.integration.service_support import LiveServer, live_service, tiny_settings

TEXT_TOKENS = 24
FACT_TOKENS = 80
BATCH_TOKENS = 200
BASE = {"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is",
        "target_new": "English"}


def fact(**changes: Any) -> dict[str, Any]:
    return {**BASE, **changes}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("fact-checks")
    settings = tiny_settings(root / "data", save_tiny_model(root / "model"),
                             max_text_tokens=TEXT_TOKENS, max_fact_tokens=FACT_TOKENS,
                             max_batch_tokens=BATCH_TOKENS)
    with live_service(settings) as live:
        yield live


def tokens(server: LiveServer, text: str) -> int:
    """The length of ``text`` in the tokenizer the server loaded."""
    tokenizer = server.services.parts.lm.tokenizer
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def jobs(server: LiveServer) -> list[str]:
    return [j.id for j in server.services.store.list_jobs(limit=1000)]


def refused(server: LiveServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST ``body``, expect a 422, and check that no job was stored."""
    before = jobs(server)
    with server.client() as client:
        response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert jobs(server) == before
    return response.json()


def test_contradiction_is_refused_naming_both(server: LiveServer) -> None:
    """Same subject and prompt under the ledger's normalisation (case, outer whitespace)."""
    other = fact(subject="  danielle DARRIEUX ", target_new="Dutch")
    body = refused(server, "/edits", {"facts": [fact(), fact(subject="Paris", target_new="x"),
                                                other]})
    assert "facts[0]" in body["detail"] and "facts[2]" in body["detail"], body
    assert "'English'" in body["detail"] and "'Dutch'" in body["detail"], body
    assert body["errors"][0]["field"] == "facts[2].target_new"


def test_repeat_is_kept_once_first_copy(server: LiveServer) -> None:
    first = fact(target_true="French")
    repeat = fact(prompt=" the mother tongue of {} is ", target_true="German")
    extra = fact(subject="Paris")
    with server.client() as client:
        response = client.post("/edits", json={"facts": [first, repeat, extra]})
        assert response.status_code == 202, response.text
        job = client.get(f"/edits/{response.json()['job_id']}").json()
    assert job["n_facts"] == 2
    stored = server.services.store.get_job(job["job_id"]).payload["facts"]
    assert [f["subject"] for f in stored] == ["Danielle Darrieux", "Paris"]
    assert stored[0]["target_true"] == "French"


def test_text_limit_counts_tokens_not_characters(server: LiveServer) -> None:
    """200 emoji are 200 characters (far under the schema's 2,000) but many more tokens."""
    subject = "\U0001F600" * 200
    assert tokens(server, subject) > TEXT_TOKENS
    body = refused(server, "/edits", {"facts": [fact(subject=subject)]})
    assert body["errors"][0]["field"] == "facts[0].subject"
    assert f"at most {TEXT_TOKENS} tokens" in body["detail"]


def test_text_at_the_limit_passes_one_more_fails(server: LiveServer) -> None:
    """The bound is the tokenizer's count: a question of exactly the limit is accepted."""
    word = " French"
    per = tokens(server, word * 2) - tokens(server, word)
    assert per >= 1 and tokens(server, "Is" + word) == tokens(server, "Is") + per
    n = (TEXT_TOKENS - tokens(server, "Is")) // per
    fits = "Is" + word * n
    assert tokens(server, fits) <= TEXT_TOKENS < tokens(server, fits + word * 2)
    with server.client() as client:
        ok = client.post("/edits", json={"facts": [fact(subject="Lyon", question=fits)]})
    assert ok.status_code == 202, ok.text
    body = refused(server, "/edits", {"facts": [fact(subject="Nice", question=fits + word * 2)]})
    assert body["errors"][0]["field"] == "facts[0].question"


@pytest.mark.parametrize("name", ["target_new", "target_true", "prompt"])
def test_every_field_is_counted(server: LiveServer, name: str) -> None:
    long = "\U0001F600" * 100 + (" {}" if name == "prompt" else "")
    body = refused(server, "/edits", {"facts": [fact(**{name: long})]})
    assert body["errors"][0]["field"] == f"facts[0].{name}"


@pytest.mark.parametrize("name", ["paraphrase_prompts", "neighborhood_prompts"])
def test_prompt_lists_name_the_position(server: LiveServer, name: str) -> None:
    body = refused(server, "/edits", {"facts": [fact(**{name: ["Hello", "\U0001F600" * 100]})]})
    assert body["errors"][0]["field"] == f"facts[0].{name}[1]"


def test_fact_limit_sums_its_texts(server: LiveServer) -> None:
    prompt = "In short, her tongue is"
    assert tokens(server, prompt) <= TEXT_TOKENS
    many = [prompt] * (FACT_TOKENS // tokens(server, prompt) + 1)
    body = refused(server, "/edits", {"facts": [fact(paraphrase_prompts=many)]})
    assert body["errors"][0]["field"] == "facts[0]"
    assert f"more than {FACT_TOKENS} tokens" in body["detail"]


def test_batch_limit_sums_its_facts(server: LiveServer) -> None:
    prompt = "In short, her tongue is"
    each = fact(paraphrase_prompts=[prompt] * 2)
    per_fact = sum(tokens(server, t) for t in (each["subject"], each["prompt"], " English",
                                               prompt, prompt))
    assert per_fact <= FACT_TOKENS
    facts = [{**each, "subject": f"Person {i}"} for i in range(BATCH_TOKENS // per_fact + 2)]
    body = refused(server, "/edits", {"facts": facts})
    assert body["errors"][0]["field"] == "facts"
    assert f"more than {BATCH_TOKENS} tokens" in body["detail"]


def test_evaluation_records_are_counted_too(server: LiveServer) -> None:
    base = server.services.store.active_version()
    record = fact(subject="\U0001F600" * 100)
    body = refused(server, f"/versions/{base}/evaluate",
                   {"records": [record], "include_own_facts": False})
    assert body["errors"][0]["field"] == "records[0].subject"


def test_limits_are_documented() -> None:
    doc = Path("docs/service.md").read_text()
    for name in ("MODELEDIT_MAX_TEXT_TOKENS", "MODELEDIT_MAX_FACT_TOKENS",
                 "MODELEDIT_MAX_BATCH_TOKENS"):
        assert name in doc, name
