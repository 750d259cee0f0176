"""Two first exports of one version at once, through real HTTP (issue 32, item 5): both get
the same whole files, written once (a per-version lock, unique temporary directories, a
published export never replaced), and exporting never takes the runtime's write lock, so
queries go on meanwhile (a query's read lock is held throughout here: an export that needed
the write lock would wait for it forever)."""

from __future__ import annotations

import io
import json
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.e2e.harness import save_tiny_model
from tests.integration.service_support import live_service, tiny_settings
from tests.integration.test_service_peft_export import commit, logits, random_delta


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("export-model"))


def members(tar_bytes: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_concurrent_first_exports_are_identical_whole_and_do_not_block_queries(
        tmp_path: Path, model_dir: Path) -> None:
    settings = tiny_settings(tmp_path / "data", model_dir, rate_limit=0)
    with live_service(settings) as server:
        services = server.services
        runtime = services.runtime
        delta = random_delta(services.parts.lm.model, (0, 1), seed=3)
        version = commit(services, runtime.base_id, delta)

        def export(fmt: str) -> httpx.Response:
            return httpx.get(f"{server.url}/versions/{version}/export", params={"format": fmt},
                             timeout=120)

        with runtime.serving(runtime.base_id), ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(export, ["hf", "hf", "peft", "peft"]))
        assert [a.status_code for a in answers] == [200] * 4, [a.text[:200] for a in answers]
        assert answers[0].content == answers[1].content
        assert answers[2].content == answers[3].content
        files = members(answers[0].content)
        marker = json.loads(files[f"{version}/modeledit_version.json"])
        assert marker["weights_sha256"] == runtime.weights_digest(version)
        assert marker["weights_sha256"] == services.store.get_version(
            version).diagnostics["weights_sha256"]
        for name in ("exports", "exports_peft"):  # no temporary directory left behind
            assert [p.name for p in (settings.data_path / name).iterdir()] == [version]

    out = tmp_path / "unpacked"
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    exported = AutoModelForCausalLM.from_pretrained(out / version)
    merged = AutoModelForCausalLM.from_pretrained(model_dir)
    delta.apply(merged)
    torch.testing.assert_close(logits(exported), logits(merged), rtol=0, atol=1e-5)


def test_error_messages_name_no_server_path(tmp_path: Path, model_dir: Path) -> None:
    """A version whose delta file is gone: the store's message names the file; the client's
    409 names the data directory only as <data_dir>, on /v1 and the native endpoints."""
    settings = tiny_settings(tmp_path / "data", model_dir, rate_limit=0)
    with live_service(settings) as server:
        services = server.services
        delta = random_delta(services.parts.lm.model, (0,), seed=4)
        version = commit(services, services.runtime.base_id, delta)
        services.store.delta_file(services.store.get_version(version)).unlink()
        answers = [
            httpx.post(f"{server.url}/v1/completions", timeout=60,
                       json={"model": version, "prompt": "x", "max_tokens": 1}),
            httpx.post(f"{server.url}/generate", json={"prompt": "x", "version": version},
                       timeout=60),
        ]
        for answer in answers:
            assert answer.status_code == 409, answer.text
            assert "missing" in answer.text and "<data_dir>" in answer.text
            assert str(settings.data_path) not in answer.text
            assert str(tmp_path) not in answer.text
