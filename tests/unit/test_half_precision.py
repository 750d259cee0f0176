"""Every editing path in bfloat16 and float16, as users run 7-8B models on GPUs.

This CPU runs both dtypes (bf16 natively where it has AVX512-BF16), so the same code a GPU
runs is tested here: z optimisation with a float32 offset, forward replay, keys, statistics,
the solve, apply / exact revert, delta files, evaluation and the service's queries.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from bench.tiny import tiny_model, tiny_tokenizer
from editing import Editor, EditState, WeightDelta
from editing.evaluate.suite import evaluate
from editing.forward.logprob import continuation_logprobs, target_logprob
from editing.solve.stats import CovarianceCache
from editing.weights.delta import DeltaError
from editing.weights.precision import rounding_survival
from models.generate import BatchEngine, Request, SamplingParams
from models.specs import mlp_out_weight
from tests.conftest import FACTS, TINY_HPARAMS

HALF = [torch.bfloat16, torch.float16]
HP = TINY_HPARAMS.replace(
    z_steps=20, clamp_norm_factor=10.0, kl_factor=0.0, weight_decay=0.0, covariance_weight=1.0
)


def half_tiny(arch: str, dtype: torch.dtype):
    tokenizer = tiny_tokenizer("bos" if arch == "llama" else "bpe")
    return tiny_model(arch, vocab_size=len(tokenizer)).to(dtype), tokenizer


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in model.state_dict().items()}


def assert_same_state(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    for name, value in model.state_dict().items():
        assert value.dtype == before[name].dtype, name
        assert torch.equal(value, before[name]), f"{name} changed"


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("method", ["fe", "memit", "per_layer", "one_layer"])
def test_edit_apply_revert_round_trip(arch: str, dtype: torch.dtype, method: str, corpus, tmp_path) -> None:
    model, tok = half_tiny(arch, dtype)
    editor = Editor(model, tok, hparams=HP.with_method(method), model_name="tiny", cache_dir=tmp_path,
                    corpus=corpus)
    fact = FACTS[0]
    before = state_of(model)
    logp_before = target_logprob(model, tok, fact.text, fact.target_new)

    result = editor.edit([fact])
    assert_same_state(model, before)  # edit() computes a delta, it does not keep changes
    assert result.delta.base_dtype == str(dtype).removeprefix("torch.")
    assert all(update.left.dtype == torch.float32 for update in result.delta.updates.values())
    assert all(loss == loss for loss in result.diagnostics["z_loss"]), "z loss is NaN"

    base = result.delta.apply(model)
    logp_after = target_logprob(model, tok, fact.text, fact.target_new)
    assert logp_after > logp_before + 0.2, (logp_before, logp_after)
    WeightDelta.revert(model, base)
    assert_same_state(model, before)  # bit-identical, in the model's own dtype

    path = tmp_path / "delta.safetensors"
    result.delta.save(path)
    loaded = WeightDelta.load(path)
    assert loaded.sha256 == result.delta.sha256 and loaded.base_dtype == result.delta.base_dtype
    loaded.apply(model)
    assert target_logprob(model, tok, fact.text, fact.target_new) == pytest.approx(logp_after)


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_delta_refuses_a_model_in_another_dtype(dtype: torch.dtype, corpus, tmp_path) -> None:
    model, tok = half_tiny("llama", dtype)
    delta = Editor(model, tok, hparams=HP, cache_dir=tmp_path, corpus=corpus).edit([FACTS[0]]).delta
    with pytest.raises(DeltaError, match="load it in"):
        delta.check_compatible(model.float())


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_z_offset_and_optimiser_stay_float32(dtype: torch.dtype, corpus, tmp_path) -> None:
    model, tok = half_tiny("llama", dtype)
    editor = Editor(model, tok, hparams=HP, cache_dir=tmp_path, corpus=corpus)
    z = editor.z_at(FACTS, HP.layers[0])
    assert z.offset.dtype == torch.float32 and z.h.dtype == torch.float32
    assert torch.isfinite(z.offset).all() and z.offset.norm() > 0
    assert max(z.nll) < 10


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_statistics_of_a_half_model_match_float32(dtype: torch.dtype, corpus, tmp_path) -> None:
    """Accumulated in float32/float64 whatever the model computes in: close to float32's."""
    tok = tiny_tokenizer("bos")
    full = tiny_model("llama", vocab_size=len(tok))
    half = tiny_model("llama", vocab_size=len(tok)).to(dtype)
    stats = CovarianceCache(tmp_path / "a", corpus, n_samples=16, seq_len=16)
    ref = stats.get(full, tok, [1], "full")[1]
    got = CovarianceCache(tmp_path / "b", corpus, n_samples=16, seq_len=16).get(half, tok, [1], "half")[1]
    assert ref.dtype == got.dtype == torch.float64
    assert float((got - ref).norm() / ref.norm()) < 0.05


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_evaluation_and_queries_in_half_precision(dtype: torch.dtype, corpus, tmp_path) -> None:
    model, tok = half_tiny("gpt2", dtype)
    fact = replace(FACTS[0], paraphrase_prompts=("Danielle Darrieux speaks",),
                   neighborhood_prompts=("The mother tongue of Michel Rocard is",))
    delta = Editor(model, tok, hparams=HP, cache_dir=tmp_path, corpus=corpus).edit([fact]).delta
    before = state_of(model)
    unedited = evaluate(model, tok, [fact], None, dataset="counterfact")
    metrics = evaluate(model, tok, [fact], delta, dataset="counterfact")
    assert_same_state(model, before)  # evaluation reverts the delta exactly
    assert metrics["efficacy_success"] >= unedited["efficacy_success"]
    assert 0 < metrics["kl"] < 50 and unedited["kl"] == 0
    scores = continuation_logprobs(model, tok, FACTS[0].text, ["English", "French"])
    assert all(bool(torch.isfinite(s.double().sum())) for s in scores)
    engine = BatchEngine(model, tok)  # the service's query path
    request = Request(list(tok(FACTS[0].text).input_ids),
                      SamplingParams(max_tokens=1, temperature=0.0, logprobs=5, ignore_eos=True))
    engine.add(request)
    while engine.has_work():
        engine.step()
    top = request.top_logprobs[0]
    assert len(top) == 5 and top[0][1] >= top[-1][1] and math.isfinite(top[0][1])


def test_rounding_survival_measures_what_half_precision_loses() -> None:
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(64, 32, generator=gen)
    small = torch.randn(64, 32, generator=gen) * 1e-4
    exact = rounding_survival(weight, small)
    assert exact["error"] < 1e-3  # float32 keeps ~7 digits: 1e-4 on top of 1 loses ~1e-3 of it
    rounded = rounding_survival(weight.bfloat16(), small)
    assert rounded["error"] > 0.5  # entries far below bf16's spacing near 1 mostly vanish
    large = rounding_survival(weight.bfloat16(), small * 1e3)
    assert large["error"] < 0.05


def test_a_batch_is_split_into_z_groups_that_fit_the_memory_budget(corpus, tmp_path, monkeypatch) -> None:
    from models.plan import plan_for_model

    model, tok = half_tiny("llama", torch.bfloat16)
    editor = Editor(model, tok, hparams=HP, cache_dir=tmp_path, corpus=corpus)
    plan = plan_for_model(model, HP.layers, z_layer=HP.layers[0], n_prefixes=len(editor.prefixes()))
    monkeypatch.setenv("MODELEDIT_MEMORY_BUDGET", str(plan.resident + 2 * plan.z_per_fact))
    result = editor.edit(FACTS)
    assert result.diagnostics["z_group_size"] == 2  # 3 facts, 2 fit at a time
    assert len(result.diagnostics["z_loss"]) == 3


def test_a_fact_that_cannot_fit_is_refused_naming_the_setting(corpus, tmp_path, monkeypatch) -> None:
    from models.plan import InsufficientMemory

    model, tok = half_tiny("llama", torch.bfloat16)
    monkeypatch.setenv("MODELEDIT_MEMORY_BUDGET", "1KiB")
    editor = Editor(model, tok, hparams=HP, cache_dir=tmp_path, corpus=corpus)
    with pytest.raises(InsufficientMemory, match="MODELEDIT_MEMORY_BUDGET"):
        editor.edit(FACTS[:1])


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_edited_matrices_are_held_in_float32_and_released_on_revert(dtype: torch.dtype) -> None:
    """A small update survives whole (it would not in bf16), the model still computes in its
    dtype, and revert gives back the half-precision bits. GPT-2's Conv1D has a bias: held too."""
    from editing.weights.delta import LayerUpdate
    from models.specs import mlp_out, weight_out_in

    model, _tok = half_tiny("gpt2", dtype)
    before = state_of(model)
    shape = weight_out_in(model, 1).shape
    gen = torch.Generator().manual_seed(0)
    small = LayerUpdate(torch.randn(shape[0], 1, generator=gen) * 1e-2,
                        torch.randn(1, shape[1], generator=gen) * 1e-2)
    delta = WeightDelta({1: small}, model_type="gpt2")
    stored = rounding_survival(weight_out_in(model, 1), small.dense())
    base = delta.apply(model)
    assert mlp_out(model, 1).weight.dtype == mlp_out(model, 1).bias.dtype == torch.float32
    landed = weight_out_in(model, 1).double() - before["transformer.h.1.mlp.c_proj.weight"].T.double()
    error = float((landed - small.dense().double()).norm() / small.dense().double().norm())
    assert error < 1e-3 and stored["error"] > 0.1, (error, stored)  # stored in half: lost
    logits = model(torch.tensor([[5, 6, 7]])).logits
    assert logits.dtype == dtype and torch.isfinite(logits).all()
    WeightDelta.revert(model, base)
    assert_same_state(model, before)
    assert mlp_out(model, 1)._forward_hooks == {} and mlp_out(model, 1)._forward_pre_hooks == {}


def test_merged_checkpoint_of_a_half_model_keeps_the_edited_matrices_in_float32(tmp_path) -> None:
    """``format=hf`` export is ``save_pretrained`` of the version's weights: the edited
    matrices are written in float32, every other tensor in the model's dtype."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from editing.weights.delta import LayerUpdate
    from models.specs import mlp_out_weight, weight_out_in

    model, _tok = half_tiny("llama", torch.bfloat16)
    shape = weight_out_in(model, 2).shape
    update = LayerUpdate(torch.full((shape[0], 1), 1e-2), torch.full((1, shape[1]), 1e-2))
    WeightDelta({2: update}, model_type="llama").apply(model)
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        dtypes = {name: f.get_slice(name).get_dtype() for name in f.keys()}  # noqa: SIM118
    assert dtypes["model.layers.2.mlp.down_proj.weight"] == "F32"
    assert dtypes["model.layers.1.mlp.down_proj.weight"] == "BF16"
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert torch.equal(mlp_out_weight(reloaded, 2), mlp_out_weight(model, 2))


@pytest.mark.parametrize("exact", [True, False], ids=["base-copy", "subtracted"])
@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_base_targets_on_a_half_precision_chain(dtype: torch.dtype, exact: bool, corpus, tmp_path) -> None:
    """``targets_from="base"`` computes the targets on the base and puts the float32-held
    weights of the chain back bit for bit: with the state's copy of the base (the editor's
    own from the first batch) the targets see the half-precision base bits exactly; rebuilt
    from the deltas alone, the chain's updates are taken off (the base to float32 rounding)."""
    model, tok = half_tiny("llama", dtype)
    editor = Editor(model, tok, hparams=HP.replace(targets_from="base"), model_name="tiny", cache_dir=tmp_path,
                    corpus=corpus)
    base = {layer: mlp_out_weight(model, layer).detach().clone() for layer in HP.layers}
    first = editor.edit(FACTS[:2])
    first.delta.apply(model)
    chained = state_of(model)
    seen: dict[int, torch.Tensor] = {}
    compute = editor.targets

    def recording(requests, progress=None):
        seen.update({layer: mlp_out_weight(model, layer).detach().clone() for layer in HP.layers})
        return compute(requests, progress)

    editor.targets = recording
    state = first.state if exact else EditState.from_deltas([first.delta])
    assert state.has_base_for(HP.layers) == exact
    editor.edit(FACTS[2:], state=state)
    assert_same_state(model, chained)
    for layer in HP.layers:
        chained_weight = mlp_out_weight(model, layer)
        assert chained_weight.dtype == torch.float32, "the chain's edited matrices stay held in float32"
        assert (chained_weight - base[layer].float()).abs().max() > 1e-3, "the chain changed this layer"
        if exact:
            assert seen[layer].dtype == dtype and torch.equal(seen[layer], base[layer])
        else:
            torch.testing.assert_close(seen[layer].float(), base[layer].float(), rtol=0,
                                       atol=1e-5 * float(chained_weight.abs().max()))
