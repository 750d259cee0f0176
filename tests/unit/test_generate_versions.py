"""The batch engine's promise: a request in a mixed-version batch gets what its version gives
alone on merged weights (per-token log-probs within 1e-4 in float32, 2e-2 in bfloat16, and
the same greedy text in float32), and the same seed gives the same text whatever shares the
batch. Versions are made by real edits (FE on the tiny model), two chained and one branch."""

from __future__ import annotations

import pytest
import torch

from app.serving.additive import AdditiveRuntime
from app.serving.runtime import Chain
from bench.tiny import tiny_model, tiny_tokenizer
from editing import Editor, WeightDelta
from editing.weights.fingerprint import weights_digest
from models.generate import BatchEngine, Request, SamplingParams, generate
from models.load import LoadedModel
from tests.conftest import FACTS, TINY_HPARAMS

TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2}
PROMPTS = [
    "The mother tongue of Danielle Darrieux is",
    "Toko Yasuda plays the",
    "What university did Watts Humphrey attend?",
    "Paris is the capital of",
]
PARENTS = {"v1": "v0", "v2": "v1", "v3": "v0"}


def lineage(version: str) -> list[str]:
    out = []
    while version != "v0":
        out.append(version)
        version = PARENTS[version]
    return out[::-1]


def fresh(dtype: torch.dtype) -> torch.nn.Module:
    tokenizer = tiny_tokenizer("bos")
    return tiny_model("llama", vocab_size=len(tokenizer)).to(dtype)


@pytest.fixture(scope="module", params=[torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def versions(request: pytest.FixtureRequest, corpus, tmp_path_factory):  # noqa: ANN001, ANN201
    """(dtype, deltas by version): v1 and v3 edit the base, v2 edits v1."""
    dtype = request.param
    model, tok = fresh(dtype), tiny_tokenizer("bos")
    hp = TINY_HPARAMS.replace(z_steps=12, clamp_norm_factor=10.0)
    editor = Editor(model, tok, hparams=hp, model_name="tiny", cache_dir=tmp_path_factory.mktemp("c"),
                    corpus=corpus)
    deltas: dict[str, WeightDelta] = {}
    deltas["v1"] = editor.edit([FACTS[0]]).delta
    saved = deltas["v1"].apply(model)
    deltas["v2"] = editor.edit([FACTS[1]]).delta
    WeightDelta.revert(model, saved)
    deltas["v3"] = editor.edit([FACTS[2]]).delta
    return dtype, deltas


def merged(dtype: torch.dtype, deltas: dict[str, WeightDelta], version: str) -> torch.nn.Module:
    model = fresh(dtype)
    for v in lineage(version):
        deltas[v].apply(model)
    return model


def runtime_for(dtype: torch.dtype, deltas: dict[str, WeightDelta]) -> AdditiveRuntime:
    def chain(version: str) -> Chain:
        return [(v, deltas[v]) for v in lineage(version)]

    return AdditiveRuntime(LoadedModel(fresh(dtype), tiny_tokenizer("bos"), "tiny"), "v0", chain)


def run_batch(model: torch.nn.Module, tok, prompts: list[str],  # noqa: ANN001
              additions: list | None = None) -> list[Request]:
    """Every prompt added before the first step: one batch, in this order."""
    engine = BatchEngine(model, tok)
    params = SamplingParams(max_tokens=8, logprobs=0, prompt_logprobs=True)
    requests = [Request(list(tok(p).input_ids), params, additions[i] if additions else None)
                for i, p in enumerate(prompts)]
    for r in requests:
        engine.add(r)
    while engine.has_work():
        engine.step()
    return requests


def worst_gap(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def test_mixed_batch_matches_each_version_alone_on_merged_weights(versions) -> None:  # noqa: ANN001
    """float32: each row against its version run alone on merged weights. bfloat16: against
    its version's merged weights in a batch of the same shape, because a CPU without native
    bfloat16 kernels rounds a batch differently from a lone row even with no version
    involved (docs/openai.md); the versions are what this test isolates."""
    dtype, deltas = versions
    runtime = runtime_for(dtype, deltas)
    tok = runtime.lm.tokenizer
    names = ["v0", "v1", "v2", "v3"]
    jobs = [(p, v) for p in PROMPTS for v in names]  # every prompt on every version, mixed
    prompts = [p for p, _ in jobs]
    requests = run_batch(runtime.lm.model, tok, prompts, [runtime.additions(v) for _, v in jobs])
    same_shape = {v: run_batch(merged(dtype, deltas, v), tok, prompts) for v in names}
    worst = 0.0
    for i, ((prompt, version), r) in enumerate(zip(jobs, requests, strict=True)):
        if dtype == torch.float32:
            ref = run_batch(merged(dtype, deltas, version), tok, [prompt])[0]
            assert r.output_ids == ref.output_ids, (prompt, version)
            assert r.text == ref.text
            worst = max(worst, worst_gap(r.token_logprobs, ref.token_logprobs))
        else:
            ref = same_shape[version][i]
        worst = max(worst, worst_gap(r.prompt_logprobs[1:], ref.prompt_logprobs[1:]))
    assert worst <= TOL[dtype], worst
    # the versions really differ (else the test could not fail)
    by_version = {v: r.prompt_logprobs[1:] for (p, v), r in zip(jobs, requests, strict=True)
                  if p == PROMPTS[0]}
    assert by_version["v1"] != by_version["v0"] and by_version["v2"] != by_version["v1"]


def test_digest_of_a_version_equals_a_replay_without_touching_the_model(versions) -> None:  # noqa: ANN001
    dtype, deltas = versions
    runtime = runtime_for(dtype, deltas)
    before = weights_digest(runtime.lm.model)
    for version in ["v0", "v1", "v2", "v3"]:
        assert runtime.weights_digest(version) == weights_digest(merged(dtype, deltas, version))
    assert weights_digest(runtime.lm.model) == before
    runtime.set_active("v2")
    assert runtime.active == "v2" and runtime.weights_digest() == runtime.weights_digest("v2")


def test_same_seed_same_text_whatever_shares_the_batch(versions) -> None:  # noqa: ANN001
    """In float32 the same seed gives the same text whatever shares the batch. In bfloat16
    the batch's shape changes the rounding of the logits, so a sampled draw may differ with
    the company it keeps (docs/openai.md); there the same seed in the same batch repeats."""
    dtype, deltas = versions
    runtime = runtime_for(dtype, deltas)
    tok = runtime.lm.tokenizer
    sampled = SamplingParams(max_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    alone = generate(runtime.lm.model, tok, [PROMPTS[0]], sampled,
                     additions=[runtime.additions("v2")])[0]
    again = generate(runtime.lm.model, tok, [PROMPTS[0]], sampled,
                     additions=[runtime.additions("v2")])[0]
    assert again.token_ids == alone.token_ids and again.text == alone.text
    others = [SamplingParams(max_tokens=6 + i, temperature=1.0, seed=i) for i in range(5)]
    engine = BatchEngine(runtime.lm.model, tok)
    mine = Request(list(tok(PROMPTS[0]).input_ids), sampled, runtime.additions("v2"))
    for i, p in enumerate(others):
        engine.add(Request(list(tok(PROMPTS[i % 4]).input_ids), p,
                           runtime.additions(["v0", "v1", "v3"][i % 3])))
    engine.step()  # the others started first; mine joins a batch in flight
    engine.add(mine)
    while engine.has_work():
        engine.step()
    if dtype == torch.float32:
        assert mine.output_ids == alone.token_ids and mine.text == alone.text
    other = generate(runtime.lm.model, tok, [PROMPTS[0]], SamplingParams(
        max_tokens=10, temperature=1.0, top_p=0.9, seed=8), additions=[runtime.additions("v2")])
    assert other[0].token_ids != alone.token_ids  # the seed matters (else this test is blind)


def run_all(engine: BatchEngine, requests: list[Request]) -> list[Request]:
    for r in requests:
        engine.add(r)
    while engine.has_work():
        engine.step()
    return requests


def test_reused_prefixes_give_what_a_fresh_pass_gives(versions) -> None:  # noqa: ANN001
    """Prompts that share a stored prefix (a question scored or continued again, on several
    versions) start from its keys and values and run only the rest: they get what a pass
    without reuse gives, within the tolerance, the same greedy text in float32, and no
    version reuses another's rows."""
    dtype, deltas = versions
    runtime = runtime_for(dtype, deltas)
    tok = runtime.lm.tokenizer
    head = list(tok(PROMPTS[0]).input_ids)
    tail = list(tok(" French", add_special_tokens=False).input_ids)
    names = ["v0", "v1", "v2"]
    engine = BatchEngine(runtime.lm.model, tok)
    run_all(engine, [Request(head, SamplingParams(max_tokens=2), runtime.additions(v))
                     for v in names])  # stores each version's prompt
    assert engine.prefixes is not None and engine.prefixes.hits == 0
    scored = SamplingParams(max_tokens=0, prompt_logprobs=True, prompt_logprobs_from=len(head))
    greedy = SamplingParams(max_tokens=8, logprobs=0)
    order = ["v2", "v0", "v1"]  # not the order stored: a lookup must pick by version
    jobs = [(v, head + tail, scored) for v in order] + [(v, head, greedy) for v in order]

    def requests() -> list[Request]:
        return [Request(ids, p, runtime.additions(v)) for v, ids, p in jobs]

    reused = run_all(engine, requests())
    assert engine.prefixes.hits == len(jobs)  # every one started from a stored prefix
    fresh_engine = BatchEngine(runtime.lm.model, tok, prefix_tokens=0)
    fresh_runs = run_all(fresh_engine, requests())
    worst = 0.0
    for (v, _, p), r, ref in zip(jobs, reused, fresh_runs, strict=True):
        if p is scored:
            assert r.prompt_logprobs[:len(head)] == [None] * len(head)
            got, want = r.prompt_logprobs[len(head):], ref.prompt_logprobs[len(head):]
            assert len(got) == len(tail)
        elif dtype == torch.float32:
            assert r.output_ids == ref.output_ids, v
            got, want = r.token_logprobs, ref.token_logprobs
        else:
            got, want = r.token_logprobs[:1], ref.token_logprobs[:1]
        worst = max(worst, *(abs(a - b) for a, b in zip(got, want, strict=True)))
    assert worst <= TOL[dtype], worst
    scores = [r.prompt_logprobs[-1] for r in reused[:len(names)]]
    assert len(set(scores)) == len(names)  # the versions differ (else this test is blind)
