"""``GET /versions/{v}/export?format=peft`` on the real service stack (uvicorn, real Redis,
SQLite store) and ``python -m app export --format peft``: the adapter PEFT loads gives the
version's logits, the marker names the version, and bad requests get a clear 4xx."""

from __future__ import annotations

import io
import json
import tarfile
import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from app.cli import main as cli_main
from app.cli import parse
from app.services import Services
from app.serving.export import FORMATS
from editing.weights.delta import LayerUpdate, WeightDelta
from models.specs import weight_out_in
from tests.e2e.harness import save_tiny_model, wait_for
from tests.integration.service_support import live_service, tiny_settings

peft = pytest.importorskip("peft")

IDS = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("peft-model"))


def random_delta(model: torch.nn.Module, layers: tuple[int, ...], seed: int) -> WeightDelta:
    gen = torch.Generator().manual_seed(seed)
    updates = {}
    for layer in layers:
        d_out, d_in = weight_out_in(model, layer).shape
        updates[layer] = LayerUpdate(torch.randn(d_out, 2, generator=gen) * 0.05,
                                     torch.randn(2, d_in, generator=gen))
    return WeightDelta(updates=updates, model_type=model.config.model_type)


def commit(services: Services, parent: str, delta: WeightDelta) -> str:
    """What the worker does for an edit job: the delta file, its digest, a new version."""
    store, runtime = services.store, services.runtime
    job, _ = store.create_job({"kind": "edit", "facts": [], "method": "fe"})
    stored = delta.stored()
    with runtime.exclusive(parent) as served, runtime.candidate(served, stored) as candidate:
        digest = candidate.weights_digest()
    return store.commit_version(job.id, parent, stored.to_bytes(), delta.sha256, method="fe",
                                diagnostics={"weights_sha256": digest}).id


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def untar(content: bytes, into: Path) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(content)) as tar:
        names = tar.getnames()
        tar.extractall(into, filter="data")
    return names


def test_peft_export_over_http_and_cli(tmp_path: Path, model_dir: Path,
                                       capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    settings = tiny_settings(tmp_path / "data", model_dir)
    with live_service(settings) as live, live.client() as client:
        model = live.services.parts.lm.model
        chain = [random_delta(model, (1, 2), seed=1), random_delta(model, (2, 3), seed=2)]
        v1 = commit(live.services, "v0", chain[0])
        v2 = commit(live.services, v1, chain[1])
        recorded = client.get(f"/versions/{v2}").json()["weights_sha256"]

        response = client.get(f"/versions/{v2}/export", params={"format": "peft"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/x-tar"
        names = untar(response.content, tmp_path / "http")
        assert sorted(names) == [f"{v2}/adapter_config.json", f"{v2}/adapter_model.safetensors",
                                 f"{v2}/modeledit_version.json"]
        again = client.get(f"/versions/{v2}/export", params={"format": "peft"})
        assert again.content == response.content  # served from the cache

        compressed = client.get(f"/versions/{v2}/export", params={"format": "peft", "tol": 0.5})
        assert compressed.status_code == 200, compressed.text
        untar(compressed.content, tmp_path / "tol")
        assert json.loads((tmp_path / "tol" / v2 / "modeledit_version.json").read_text())[
            "max_rel_error"] <= 0.5
        assert_refusals(client, v2)
        with monkeypatch.context() as patch:  # a rank vLLM would refuse: v1 has rank 2
            patch.setattr("editing.export.peft.VLLM_RANKS", (1,))
            too_big = client.get(f"/versions/{v1}/export", params={"format": "peft"})
        assert too_big.status_code == 422, too_big.text
        assert "tol" in too_big.json()["detail"] and "format hf" in too_big.json()["detail"]
        base_tar = client.get("/versions/v0/export").content
        merged = client.get(f"/versions/{v2}/export")  # format=hf stays the default
        assert merged.status_code == 200, merged.text
        assert {f"{v2}/config.json", f"{v2}/modeledit_version.json"} <= set(
            untar(merged.content, tmp_path / "hf"))
        cached = settings.data_path / "exports_peft"
        # the scratch directory of the compressed export goes after sending
        wait_for(lambda: sorted(p.name for p in cached.iterdir()) == [v2], 10,
                 f"only {v2} left in {cached}")

    adapter = tmp_path / "http" / v2
    marker = json.loads((adapter / "modeledit_version.json").read_text())
    assert marker["version"] == v2 and marker["chain"] == ["v0", v1, v2]
    assert marker["format"] == "peft" and marker["r"] == 8 and marker["layers"] == [1, 2, 3]
    assert marker["weights_sha256"] == recorded
    assert_same_logits_as_deltas(model_dir, adapter, chain)

    # the adapter's base is the base version's export, unpacked beside it as v0/
    assert json.loads((adapter / "adapter_config.json").read_text())[
        "base_model_name_or_path"] == "v0"
    untar(base_tar, tmp_path / "http")
    monkeypatch.chdir(tmp_path / "http")
    assert_auto_peft_loads(v2, chain, model_dir)

    # the command line writes the same adapter from the same store; its base is the absolute
    # path of the base's export in the data directory, loadable from anywhere on this machine
    assert cli_main(["export", v2, "--format", "peft", "--out", str(tmp_path / "cli"),
                     "--data-dir", str(settings.data_path), "--model", str(model_dir)]) == 0
    assert "--max-lora-rank 8" in capsys.readouterr().out
    assert (tmp_path / "cli" / "adapter_model.safetensors").read_bytes() == (
        adapter / "adapter_model.safetensors").read_bytes()
    cli_config = json.loads((tmp_path / "cli" / "adapter_config.json").read_text())
    assert cli_config["base_model_name_or_path"] == str(settings.data_path / "exports" / "v0")
    monkeypatch.chdir(tmp_path)
    assert_auto_peft_loads(tmp_path / "cli", chain, model_dir)
    assert cli_main(["export", "v0", "--format", "peft", "--out", str(tmp_path / "base"),
                     "--data-dir", str(settings.data_path), "--model", str(model_dir)]) == 2
    assert "base model" in capsys.readouterr().err and not (tmp_path / "base").exists()
    assert cli_main(["export", v1, "--format", "peft", "--out", str(tmp_path / "cli"),
                     "--data-dir", str(settings.data_path), "--model", str(model_dir)]) == 2
    assert "holds another export" in capsys.readouterr().err  # never overwritten silently


def assert_refusals(client, version: str) -> None:  # noqa: ANN001
    base = client.get("/versions/v0/export", params={"format": "peft"})
    assert base.status_code == 409 and "base model" in base.json()["detail"], base.text
    unknown = client.get(f"/versions/{version}/export", params={"format": "onnx"})
    assert unknown.status_code == 422, unknown.text
    assert all(f"'{name}'" in unknown.json()["detail"] for name in FORMATS), unknown.text
    assert unknown.json()["errors"][0]["field"] == "format"
    for params in ({"format": "peft", "tol": 1.5}, {"format": "peft", "tol": "x"},
                   {"format": "hf", "tol": 0.1}):
        bad = client.get(f"/versions/{version}/export", params=params)
        assert bad.status_code == 422 and "tol" in bad.json()["detail"], (params, bad.text)
    missing = client.get("/versions/v99/export", params={"format": "peft"})
    assert missing.status_code == 404, missing.text


def assert_same_logits_as_deltas(model_dir: Path, adapter: Path, chain: list[WeightDelta]) -> None:
    edited = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    want = logits(edited)
    for delta in chain:
        delta.apply(edited)
    want, before = logits(edited), want
    assert (want - before).abs().max() > 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        loaded = peft.PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(model_dir), adapter).eval()
    got = logits(loaded)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max(), float((got - want).abs().max())


def assert_auto_peft_loads(adapter: str | Path, chain: list[WeightDelta], model_dir: Path) -> None:
    """``AutoPeftModelForCausalLM`` finds the base from the adapter alone: the version's logits."""
    edited = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    for delta in chain:
        delta.apply(edited)
    want = logits(edited)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        # PEFT asks the Hub for a tokenizer beside an adapter named by a relative path
        warnings.filterwarnings("ignore", "Unable to fetch remote file", UserWarning)
        loaded = peft.AutoPeftModelForCausalLM.from_pretrained(str(adapter)).eval()
    got = logits(loaded)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max(), float((got - want).abs().max())


def test_cli_export_arguments() -> None:
    args = parse(["export", "v1", "out"])  # the positional form of the hf export still works
    assert (args.format, str(args.out_dir), args.tol) == ("hf", "out", 0.0)
    args = parse(["export", "v1", "--format", "peft", "--out", "dir", "--tol", "0.01"])
    assert (args.format, str(args.out_dir), args.tol) == ("peft", "dir", 0.01)
    for bad in (["export", "v1"], ["export", "v1", "a", "--out", "b"],
                ["export", "v1", "d", "--tol", "0.1"], ["export", "v1", "d", "--format", "onnx"],
                ["export", "v1", "d", "--format", "peft", "--tol", "1"]):
        with pytest.raises(SystemExit) as exit_info:
            parse(bad)
        assert exit_info.value.code == 2, bad
