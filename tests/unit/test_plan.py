"""The memory plan: exact parameter counts, byte figures that scale as they must, budgets,
the formula against autograd's real saved tensors, and the command line on shipped configs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from bench.tiny import tiny_model
from models import plan as mp
from models.specs import blocks

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ["llama3-8b", "qwen2.5-7b", "gpt-j-6b", "gpt2-xl"]


@pytest.fixture(scope="module")
def gpt2xl() -> mp.MemoryPlan:
    _, config = mp.load_config("gpt2-xl")
    return mp.plan_for_config(config, torch.float32, (13, 14, 15, 16, 17))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_meta_model_counts_the_real_models_parameters(arch: str) -> None:
    real = tiny_model(arch)
    meta = mp.meta_model(real.config)
    assert next(meta.parameters()).device.type == "meta"
    assert mp.shapes_of(meta).n_params == sum(p.numel() for p in real.parameters())
    from_config = mp.plan_for_config(real.config, torch.float32, (1, 2))
    assert mp.plan_for_model(real, (1, 2)) == from_config
    assert from_config.weights == 4 * sum(p.numel() for p in real.parameters())


def test_bytes_scale_with_dtype_and_facts(gpt2xl: mp.MemoryPlan) -> None:
    _, config = mp.load_config("gpt2-xl")
    half = mp.plan_for_config(config, torch.bfloat16, gpt2xl.layers)
    assert 2 * half.weights == gpt2xl.weights
    assert 2 * half.edit_copies == gpt2xl.edit_copies
    assert mp.plan_for_config(config, torch.float16, gpt2xl.layers).weights == half.weights
    assert half.z_per_fact < gpt2xl.z_per_fact
    assert gpt2xl.z_bytes(0) == 0
    assert gpt2xl.z_bytes(40) == 2 * gpt2xl.z_bytes(20) == 40 * gpt2xl.z_per_fact
    assert gpt2xl.to_dict(1)["stats"] == gpt2xl.to_dict(500)["stats"]
    assert gpt2xl.total(1) <= gpt2xl.total(500)
    assert gpt2xl.eval_bytes(64) == 2 * gpt2xl.eval_bytes(32)


def test_z_cost_follows_the_settings(gpt2xl: mp.MemoryPlan) -> None:
    _, config = mp.load_config("gpt2-xl")
    fewer = mp.plan_for_config(config, torch.float32, gpt2xl.layers, n_prefixes=2)
    memit = mp.plan_for_config(config, torch.float32, gpt2xl.layers, z_layer=17)
    longer = mp.plan_for_config(config, torch.float32, gpt2xl.layers, tokens_per_row=48)
    assert fewer.z_per_fact < gpt2xl.z_per_fact
    assert memit.z_per_fact < gpt2xl.z_per_fact  # fewer layers above z
    assert longer.z_per_fact > 1.9 * gpt2xl.z_per_fact  # activations grow a little faster than 2x
    assert fewer.stats == gpt2xl.stats and fewer.weights == gpt2xl.weights


def test_z_group_size_fits_the_budget(gpt2xl: mp.MemoryPlan) -> None:
    budget = gpt2xl.resident + int(10.5 * gpt2xl.z_per_fact)
    n = mp.z_group_size(gpt2xl, budget)
    assert n == 10
    assert gpt2xl.resident + gpt2xl.z_bytes(n) <= budget < gpt2xl.resident + gpt2xl.z_bytes(n + 1)
    assert mp.eval_batch_size(gpt2xl, budget) >= 1


@pytest.mark.parametrize("short", [1, 10**9])
def test_one_fact_that_does_not_fit_names_a_setting(gpt2xl: mp.MemoryPlan, short: int) -> None:
    budget = gpt2xl.resident + gpt2xl.z_per_fact - short
    with pytest.raises(mp.InsufficientMemory) as err:
        mp.z_group_size(gpt2xl, budget)
    assert isinstance(err.value, ValueError)
    message = str(err.value)
    settings = ("--dtype bf16", "template_prefixes", "MODELEDIT_MEMORY_BUDGET", "--memory-budget")
    for setting in settings:
        assert setting in message
    with pytest.raises(mp.InsufficientMemory, match="MODELEDIT_MEMORY_BUDGET"):
        mp.eval_batch_size(gpt2xl, gpt2xl.resident)
    bf16 = replace(gpt2xl, dtype="bfloat16")
    with pytest.raises(mp.InsufficientMemory) as err:
        mp.z_group_size(bf16, budget)
    assert "smaller dtype" not in str(err.value)


def _saved_bytes_per_token_layer(model: torch.nn.Module, rows: int, seq: int) -> float:
    """Real bytes autograd saves per token per layer: z at layer 0 minus z at layer 2."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def saved(z_layer: int) -> int:
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                storages[storage.data_ptr()] = storage.nbytes()
            return t

        delta = torch.zeros(model.config.hidden_size, requires_grad=True)

        def add(module, args, output):  # noqa: ANN001, ANN202
            return (output[0] + delta, *output[1:]) if isinstance(output, tuple) else output + delta

        handle = blocks(model)[z_layer].register_forward_hook(add)
        ids = torch.randint(0, model.config.vocab_size, (rows, seq))
        try:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                model.base_model(input_ids=ids)
        finally:
            handle.remove()
        return sum(storages.values())

    return (saved(0) - saved(2)) / (2 * rows * seq)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_activation_formula_bounds_what_autograd_saves(arch: str) -> None:
    model = tiny_model(arch, layers=4)
    rows, seq = 3, 24
    measured = _saved_bytes_per_token_layer(model, rows, seq)
    estimate = mp.grad_bytes_per_token(mp.shapes_of(model), 4, seq)
    assert measured <= estimate <= 1.6 * measured, (measured, estimate)


@pytest.mark.parametrize("name", SHIPPED)
def test_cli_json_on_each_shipped_config(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert mp.main([name, "--dtype", "bf16", "--batch", "100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    weights_gib = out["weights"] / mp.GIB
    expected = {"llama3-8b": (14.5, 15.5), "qwen2.5-7b": (13.8, 14.6),
                "gpt-j-6b": (11.0, 11.6), "gpt2-xl": (2.8, 3.0)}[name]
    assert expected[0] < weights_gib < expected[1], weights_gib
    assert out["z"] == 100 * out["z_per_fact"]
    assert out["peak"] == out["resident"] + max(out["stats"], out["solve"], out["z"], out["eval"])
    assert isinstance(out["z_group_size"], int) and out["z_group_size"] > 0
    assert out["layers"] and out["z_layer"] == out["layers"][0]


def test_shipped_configs_are_the_published_models() -> None:
    counts = {}
    for name in SHIPPED:
        _, config = mp.load_config(name)
        counts[name] = mp.shapes_of(mp.meta_model(config)).n_params
    assert counts == {
        "llama3-8b": 8_030_261_248, "qwen2.5-7b": 7_615_616_512,
        "gpt-j-6b": 6_050_882_784, "gpt2-xl": 1_557_611_200,
    }


def test_config_by_file_directory_and_unknown_name(tmp_path: Path) -> None:
    shipped = mp.CONFIGS_DIR / "gpt2-xl.json"
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    shutil.copy(shipped, model_dir / "config.json")
    by_name = mp.load_config("gpt2-xl")[1].to_dict()
    assert mp.load_config(str(shipped))[1].to_dict() == by_name
    name, config = mp.load_config(str(model_dir))
    assert name == "my-model" and config.to_dict() == by_name
    with pytest.raises(mp.ConfigNotFound, match="llama3-8b"):
        mp.load_config(str(tmp_path / "no-such-model"))


def test_default_model_config_when_converted() -> None:
    from models.load import ModelNotAvailable, cache_dir, default_gguf_path

    try:
        gguf = default_gguf_path()
    except ModelNotAvailable:
        pytest.skip("the default model package is not installed")
    converted = cache_dir() / "models" / f"{gguf.stem}-{gguf.stat().st_size}"
    if not (converted / "config.json").exists():
        pytest.skip("the default model is not converted (python -m models.load --prepare-default)")
    name, config = mp.load_config("smollm2-135m")
    assert name == "smollm2-135m"
    plan = mp.plan_for_config(config, torch.float32, mp.layers_for_config(name, config))
    assert plan.layers == (4, 5, 6, 7, 8) and 0.1e9 < plan.n_params < 0.2e9


def test_budgets_and_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert mp.parse_bytes("40GiB") == 40 * mp.GIB == mp.parse_bytes("40G")
    assert mp.parse_bytes("512MiB") == 512 * 1024**2
    assert mp.parse_bytes("1000") == 1000
    with pytest.raises(ValueError, match="not a size"):
        mp.parse_bytes("lots")
    monkeypatch.delenv(mp.BUDGET_ENV, raising=False)
    assert mp.device_budget("cpu") > 0
    monkeypatch.setenv(mp.BUDGET_ENV, "3GiB")
    assert mp.device_budget(torch.device("cpu")) == 3 * mp.GIB
    assert mp.parse_layers("4-8") == (4, 5, 6, 7, 8) and mp.parse_layers("3,5") == (3, 5)


def test_plan_rejects_layers_outside_the_model(gpt2xl: mp.MemoryPlan) -> None:
    _, config = mp.load_config("gpt2-xl")
    with pytest.raises(ValueError, match="48 layers"):
        mp.plan_for_config(config, torch.float32, (47, 48))
    assert set(asdict(gpt2xl)) <= set(gpt2xl.to_dict(3))


def test_module_entry_point_prints_the_table() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "models.plan", "gpt2-xl", "--batch", "10", "--budget-gib", "24"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for line in ("weights", "edit copies", "statistics", "z for 10 facts", "evaluation", "peak",
                 "budget 24.00 GiB"):
        assert line in done.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "models.plan", "no-such-model"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )
    assert missing.returncode == 2 and "error: no config" in missing.stderr


def test_cli_says_what_to_change_when_nothing_fits(capsys: pytest.CaptureFixture[str]) -> None:
    assert mp.main(["gpt2-xl", "--dtype", "float32", "--memory-budget", "7GiB"]) == 0
    out = capsys.readouterr().out
    assert "budget 7.00 GiB (as given): one fact's z optimisation needs" in out
    assert "--dtype bf16" in out and "MODELEDIT_MEMORY_BUDGET" in out
    assert mp.main(["gpt2-xl", "--memory-budget", "7GiB", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["z_group_size"] > 0  # bf16 halves the weights
    assert mp.main(["gpt2-xl", "--json", "--prefixes", "0"]) == 2
    assert "n_prefixes must be an integer >= 1" in capsys.readouterr().err


def test_settings_are_typed_and_kept(gpt2xl: mp.MemoryPlan) -> None:
    assert gpt2xl.settings == mp.PlanSettings()
    assert gpt2xl.to_dict()["settings"]["tokens_per_row"] == 24
    with pytest.raises(ValueError, match="tokens_per_row"):
        mp.PlanSettings(tokens_per_row=0)
    assert mp.PlanSettings(prefix_tokens=0).prefix_tokens == 0
