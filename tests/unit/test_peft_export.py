"""A version's chain as a PEFT LoRA adapter: PEFT loads it and gives the logits of the model
with the deltas applied; compression honours its tolerance; ranks are padded for vLLM."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench.tiny import tiny_model
from editing.export.peft import (
    CONFIG_NAME,
    VLLM_RANKS,
    WEIGHTS_NAME,
    PeftExportError,
    export_peft_adapter,
    layer_factors,
    vllm_rank,
)
from editing.weights.delta import LayerUpdate, WeightDelta
from models.specs import spec_for, weight_out_in

peft = pytest.importorskip("peft")


def mlp_out_path(model, layer: int) -> str:
    """Full dotted name of a layer's MLP output module (as in ``model.named_modules()``)."""
    spec = spec_for(model)
    return f"{spec.blocks}.{layer}.{spec.mlp_out}"


def low_rank_delta(model: torch.nn.Module, ranks: dict[int, int], seed: int,
                   dense: tuple[int, ...] = ()) -> WeightDelta:
    """Random updates of the given ranks (``dense`` layers stored as one matrix)."""
    gen = torch.Generator().manual_seed(seed)
    updates = {}
    for layer, rank in ranks.items():
        d_out, d_in = weight_out_in(model, layer).shape
        left = torch.randn(d_out, rank, generator=gen) * 0.05
        right = torch.randn(rank, d_in, generator=gen)
        updates[layer] = LayerUpdate(left @ right) if layer in dense else LayerUpdate(left, right)
    return WeightDelta(updates=updates, model_type=model.config.model_type)


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def load_adapter(arch: str, path: Path) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. PEFT's "missing adapter keys"
        return peft.PeftModel.from_pretrained(tiny_model(arch), path).eval()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_peft_logits_equal_the_applied_chain(arch: str, tmp_path: Path) -> None:
    model = tiny_model(arch)
    chain = [  # layer 2 is edited twice; the second delta stores layer 3 dense
        low_rank_delta(model, {1: 2, 2: 3}, seed=1),
        low_rank_delta(model, {2: 1, 3: 2}, seed=2, dense=(3,)),
    ]
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (3, 10), generator=gen)
    base_logits = logits(model, ids)
    edited = tiny_model(arch)
    for delta in chain:
        delta.apply(edited)
    want = logits(edited, ids)
    assert (want - base_logits).abs().max() > 0.1  # the chain matters: the check below can fail

    adapter = export_peft_adapter(chain, model, tmp_path / "v2")
    assert adapter.ranks == {1: 2, 2: 4, 3: 2} and adapter.r == 8
    assert max(adapter.rel_errors.values()) < 1e-6
    peft_model = load_adapter(arch, tmp_path / "v2")
    got = logits(peft_model, ids)
    scale = want.abs().max()
    assert (got - want).abs().max() <= 1e-5 * scale, float((got - want).abs().max())

    wrapped = {name.removeprefix("base_model.model.").removesuffix(".lora_A")
               for name, _ in peft_model.named_modules() if name.endswith(".lora_A")}
    assert wrapped == {mlp_out_path(model, layer) for layer in (1, 2, 3)}  # not GPT-2's attn.c_proj


def test_long_chain_never_needs_more_than_the_matrix_rank(tmp_path: Path) -> None:
    """40 one-fact deltas on a 32 x 64 matrix: 40 directions, but only 32 can be independent."""
    model = tiny_model("llama")
    chain = [low_rank_delta(model, {1: 1}, seed=100 + i) for i in range(40)]
    adapter = export_peft_adapter(chain, model, tmp_path / "long")
    assert adapter.ranks == {1: 32} and adapter.r == 32
    assert adapter.rel_errors[1] < 1e-6
    edited = tiny_model("llama")
    for delta in chain:
        delta.apply(edited)
    ids = torch.arange(20).reshape(2, 10)
    want, got = logits(edited, ids), logits(load_adapter("llama", tmp_path / "long"), ids)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max(), float((got - want).abs().max())


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_file_layout_is_what_peft_writes(arch: str, tmp_path: Path) -> None:
    """Keys and shapes equal those of a LoRA made by PEFT itself from our adapter_config."""
    model = tiny_model(arch)
    export_peft_adapter([low_rank_delta(model, {0: 1, 2: 3}, seed=3)], model, tmp_path,
                        base_model_name="tiny-base")
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert config["r"] == config["lora_alpha"] == 8 and config["bias"] == "none"
    assert config["layers_to_transform"] == [0, 2]
    assert config["fan_in_fan_out"] is (arch == "gpt2")
    assert config["target_modules"] == (["mlp.c_proj"] if arch == "gpt2" else ["down_proj"])
    assert config["base_model_name_or_path"] == "tiny-base"

    lora_config = peft.LoraConfig(**{k: v for k, v in config.items() if k != "peft_type"})
    reference = peft.get_peft_model_state_dict(peft.get_peft_model(tiny_model(arch), lora_config))
    ours = load_file(tmp_path / WEIGHTS_NAME)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {
        k: tuple(v.shape) for k, v in reference.items()}
    assert all(v.dtype == torch.float32 for v in ours.values())


def test_compression_stays_within_its_tolerance() -> None:
    gen = torch.Generator().manual_seed(4)
    spectrum = 0.5 ** torch.arange(24, dtype=torch.float64)  # decaying singular values
    u = torch.linalg.qr(torch.randn(40, 24, generator=gen, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(64, 24, generator=gen, dtype=torch.float64))[0]
    dense = (u * spectrum) @ v.T
    # the same change as two factored updates of rank 12 each, as a chain would give
    updates = [LayerUpdate((u[:, :12] * spectrum[:12]).float(), v[:, :12].T.float()),
               LayerUpdate((u[:, 12:] * spectrum[12:]).float(), v[:, 12:].T.float())]
    exact = layer_factors(updates)
    assert exact.rank == 24 and exact.rel_error == 0.0
    kept = layer_factors(updates, 1e-12)  # below the smallest direction: nothing to drop
    assert kept.rank == 24 and 0 <= kept.rel_error < 1e-6
    for tol in (1e-1, 1e-2, 1e-3):
        factors = layer_factors(updates, tol)
        error = float(torch.linalg.matrix_norm(dense - factors.lora_b @ factors.lora_a)
                      / torch.linalg.matrix_norm(dense))
        assert error <= tol, (tol, error)
        assert factors.rel_error == pytest.approx(error, rel=1e-3, abs=1e-6)
        tail = spectrum[factors.rank - 1:].norm() / spectrum.norm()
        assert tail > tol  # minimal: one rank fewer would not meet the tolerance
        assert factors.rank < 24


def test_exact_export_drops_only_exact_zeros() -> None:
    left = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 4.0]])
    right = torch.tensor([[1.0, 2.0], [5.0, 6.0], [0.0, 0.0]])
    factors = layer_factors([LayerUpdate(left, right)])
    assert factors.rank == 1  # the zero column of left and the zero row of right add nothing
    assert torch.allclose(factors.lora_b @ factors.lora_a, (left @ right).double())


@pytest.mark.parametrize(("rank", "padded"), [(0, 8), (1, 8), (8, 8), (9, 16), (100, 128),
                                              (257, 320), (321, 512), (512, 512)])
def test_rank_is_padded_to_the_next_vllm_rank(rank: int, padded: int) -> None:
    assert vllm_rank(rank) == padded and padded in VLLM_RANKS


def test_rank_above_512_asks_for_a_tolerance_or_the_merged_export() -> None:
    with pytest.raises(PeftExportError, match="512.*tol.*merged"):
        vllm_rank(513)


def test_padding_rows_are_zero_and_rank_is_shared(tmp_path: Path) -> None:
    model = tiny_model("llama")
    chain = [low_rank_delta(model, {1: 5, 2: 2}, seed=5), low_rank_delta(model, {1: 4}, seed=6)]
    adapter = export_peft_adapter(chain, model, tmp_path)
    assert adapter.ranks == {1: 9, 2: 2} and adapter.r == 16
    tensors = load_file(tmp_path / WEIGHTS_NAME)
    a2 = tensors["base_model.model.model.layers.2.mlp.down_proj.lora_A.weight"]
    b2 = tensors["base_model.model.model.layers.2.mlp.down_proj.lora_B.weight"]
    assert a2.shape == (16, 64) and b2.shape == (32, 16)
    assert not a2[2:].any() and not b2[:, 2:].any() and a2[:2].any()
    dense = sum(d.updates[1].dense().double() for d in chain)
    a1 = tensors["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"].double()
    b1 = tensors["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"].double()
    assert torch.allclose(b1 @ a1, dense, atol=1e-6)


def test_base_model_dtype_on_request(tmp_path: Path) -> None:
    model = tiny_model("llama")
    export_peft_adapter([low_rank_delta(model, {1: 1}, seed=7)], model, tmp_path,
                        dtype=torch.bfloat16)
    assert {t.dtype for t in load_file(tmp_path / WEIGHTS_NAME).values()} == {torch.bfloat16}


@pytest.mark.parametrize(("chain", "tol", "message"), [
    ([], 0.0, "base version has nothing"),
    (None, 1.0, r"tol must be in \[0, 1\)"),
    (None, float("nan"), "tol must be"),
    ("gpt2", 0.0, "model_type 'gpt2'"),
])
def test_bad_input_is_refused_before_writing(chain, tol: float, message: str,  # noqa: ANN001
                                             tmp_path: Path) -> None:
    model = tiny_model("llama")
    if chain is None:
        chain = [low_rank_delta(model, {1: 1}, seed=8)]
    elif chain == "gpt2":
        chain = [low_rank_delta(tiny_model("gpt2"), {1: 1}, seed=8)]
    with pytest.raises(PeftExportError, match=message):
        export_peft_adapter(chain, model, tmp_path / "out", tol=tol)
    assert not (tmp_path / "out").exists()


def test_config_alone_is_enough(tmp_path: Path) -> None:
    """Without the model (only its config) the adapter is the same."""
    model = tiny_model("gpt2")
    chain = [low_rank_delta(model, {3: 2}, seed=9)]
    export_peft_adapter(chain, model, tmp_path / "model")
    export_peft_adapter(chain, model.config, tmp_path / "config")
    first, second = load_file(tmp_path / "model" / WEIGHTS_NAME), load_file(
        tmp_path / "config" / WEIGHTS_NAME)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_auto_peft_finds_a_local_base_by_itself(arch: str, tmp_path: Path) -> None:
    """The config PEFT wrote names the base's directory: ``AutoPeftModelForCausalLM`` loads base
    and adapter from the adapter directory alone and answers with the chain's logits."""
    base_dir = tmp_path / "base"
    tiny_model(arch).save_pretrained(base_dir)
    model = tiny_model(arch)
    chain = [low_rank_delta(model, {1: 2}, seed=11), low_rank_delta(model, {1: 1, 3: 2}, seed=12)]
    edited = tiny_model(arch)
    for delta in chain:
        delta.apply(edited)
    ids = torch.randint(0, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(4))
    want, base = logits(edited, ids), logits(model, ids)
    assert (want - base).abs().max() > 0.1

    export_peft_adapter(chain, model, tmp_path / "v2", base_model_name=str(base_dir))
    config = peft.LoraConfig.from_pretrained(tmp_path / "v2")
    assert config.base_model_name_or_path == str(base_dir) and config.r == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        loaded = peft.AutoPeftModelForCausalLM.from_pretrained(tmp_path / "v2").eval()
    got = logits(loaded, ids)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max(), float((got - want).abs().max())


def test_a_model_loaded_by_hub_id_names_the_hub_id(tmp_path: Path) -> None:
    """A Hub id is where anyone gets the base: no local export is made, nothing else named."""
    from types import SimpleNamespace

    from app.serving.export import peft_base_name

    model = tiny_model()
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"  # as from_pretrained(id)
    parts = SimpleNamespace(lm=SimpleNamespace(model=model))
    assert peft_base_name(parts, tmp_path / "data") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert not (tmp_path / "data").exists()
    model.config.name_or_path = str(tmp_path)  # a local directory: the base's export instead
    parts = SimpleNamespace(lm=SimpleNamespace(model=model), runtime=SimpleNamespace(base_id="v0"))
    assert peft_base_name(parts, None) == "v0"
