"""The runtime's promises: exact weights for any version however often we switch, no request
ever sees a half-switched model, and a delta that does not fit is never applied."""

from __future__ import annotations

import random
import threading
import time

import pytest
import torch

from app.serving.runtime import Chain, ModelRuntime
from bench.tiny import tiny_model, tiny_tokenizer
from editing.weights.delta import DeltaError, LayerUpdate, WeightDelta
from editing.weights.fingerprint import weights_digest
from models.load import LoadedModel
from models.specs import mlp_out_weight, num_layers, weight_out_in
from tests.e2e.harness import wait_for

# a version tree: v1 -> v2 -> v3, and v1 -> v4 (a branch), v5 edits other layers on v0
PARENTS = {"v1": "v0", "v2": "v1", "v3": "v2", "v4": "v1", "v5": "v0"}
LAYERS = {"v1": (1, 2), "v2": (2, 3), "v3": (0, 1), "v4": (1,), "v5": (3,)}


def random_delta(model: torch.nn.Module, layers: tuple[int, ...], seed: int) -> WeightDelta:
    gen = torch.Generator().manual_seed(seed)
    updates = {}
    for layer in layers:
        d_out, d_in = weight_out_in(model, layer).shape
        left = torch.randn(d_out, 1, generator=gen) * 0.1
        right = torch.randn(1, d_in, generator=gen)
        updates[layer] = LayerUpdate(left, right)
    return WeightDelta(updates=updates, model_type=model.config.model_type)


def lineage(version: str) -> list[str]:
    out = []
    while version != "v0":
        out.append(version)
        version = PARENTS[version]
    return out[::-1]


@pytest.fixture(params=[torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def setup(request: pytest.FixtureRequest) -> tuple[ModelRuntime, dict[str, WeightDelta]]:
    """In bfloat16 too: edited matrices are held in float32 and switched back exactly."""
    model = tiny_model().to(request.param)
    deltas = {v: random_delta(model, LAYERS[v], i) for i, v in enumerate(PARENTS)}

    def chain(version: str) -> Chain:
        return [(v, deltas[v]) for v in lineage(version)]

    lm = LoadedModel(model, tiny_tokenizer(), "tiny")
    return ModelRuntime(lm, "v0", chain), deltas


def replay_digest(deltas: dict[str, WeightDelta], version: str, like: ModelRuntime) -> str:
    """The weights of ``version`` built from scratch on a fresh model (in the runtime's dtype)."""
    fresh = tiny_model().to(like.lm.model.get_input_embeddings().weight.dtype)
    for v in lineage(version):
        deltas[v].apply(fresh)
    return weights_digest(fresh)


def test_any_version_any_number_of_switches_is_bit_exact(setup) -> None:
    runtime, deltas = setup
    expected = {v: replay_digest(deltas, v, runtime) for v in ["v0", *PARENTS]}
    assert len(set(expected.values())) == len(expected)
    assert runtime.base_digest == expected["v0"]
    rng = random.Random(0)
    versions = list(expected)
    for _ in range(60):
        version = rng.choice(versions)
        runtime.set_active(version)
        assert runtime.active == version == runtime.loaded
        assert weights_digest(runtime.lm.model) == expected[version], version
    runtime.set_active("v0")
    assert runtime.weights_digest() == expected["v0"]


def test_named_version_queries_never_see_a_half_switched_model(setup) -> None:
    runtime, deltas = setup
    versions = ["v0", *PARENTS]
    expected = {v: replay_digest(deltas, v, runtime) for v in versions}
    errors: list[str] = []
    served = {v: 0 for v in versions}
    switches = [0]
    stop = threading.Event()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            want = rng.choice([None, *versions])
            with runtime.serving(want) as view:
                first = weights_digest(view.model)
                time.sleep(0.001)
                second = weights_digest(view.model)
                if not first == second == expected[view.version]:
                    errors.append(f"{want} -> {view.version}")
                served[view.version] += 1

    def switcher() -> None:
        rng = random.Random(99)
        while not stop.wait(0.01):  # the follower switches on commits, not in a busy loop
            runtime.set_active(rng.choice(versions))
            switches[0] += 1

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    threads.append(threading.Thread(target=switcher))
    for thread in threads:
        thread.start()
    # run until every version was served and the active one switched often, however slow
    # the machine: the readers must have met switches, not a quiet model
    try:
        wait_for(lambda: errors or (sum(served.values()) > 50 and all(served.values())
                                    and switches[0] >= 50),
                 60, f"50 queries over every version and 50 switches ({served}, {switches})")
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert not errors, errors[:5]


def test_delta_that_does_not_fit_is_never_applied(setup) -> None:
    runtime, deltas = setup
    runtime.set_active("v2")
    before = weights_digest(runtime.lm.model)
    bad_shape = WeightDelta(updates={1: LayerUpdate(torch.ones(3, 3))})
    foreign = WeightDelta(updates={}, model_type="gpt2")
    beyond = WeightDelta(updates={num_layers(runtime.lm.model) + 3: LayerUpdate(torch.ones(1))})
    for bad in (bad_shape, foreign, beyond):
        deltas["v3"], good = bad, deltas["v3"]
        with pytest.raises(DeltaError):
            runtime.set_active("v3")
        deltas["v3"] = good
        assert runtime.active == "v2"
        assert weights_digest(runtime.lm.model) == before
    runtime.set_active("v3")
    assert mlp_out_weight(runtime.lm.model, 0).abs().sum() > 0


def test_base_weights_are_the_exact_base_of_every_layer_a_loaded_chain_changed(setup) -> None:
    """What the worker hands the editor for base targets (``EditState.from_deltas(chain,
    base=...)``): the original bits, not the base rebuilt by subtraction."""
    runtime, _ = setup
    fresh = tiny_model().to(runtime.lm.model.get_input_embeddings().weight.dtype)
    runtime.set_active("v3")  # v1, v2, v3 change layers 0-3
    base = runtime.base_weights()
    assert sorted(base.tensors) == [0, 1, 2, 3]
    for layer, saved in base.tensors.items():
        assert saved.dtype == mlp_out_weight(fresh, layer).dtype
        assert torch.equal(saved, mlp_out_weight(fresh, layer)), layer
        assert not torch.equal(saved.float(), mlp_out_weight(runtime.lm.model, layer).float())


def test_a_kept_candidate_is_served_as_its_version_and_a_dropped_one_leaves_no_trace(setup) -> None:
    """The worker applies a new delta once (``candidate``): kept, the weights are exactly the
    version's as a replay from its stored chain builds them; dropped, exactly the parent's."""
    runtime, deltas = setup
    parent_digest = runtime.weights_digest("v1")
    with runtime.exclusive("v1") as served, runtime.candidate(served, deltas["v4"]) as trial:
        assert trial.weights_digest() == replay_digest(deltas, "v4", runtime)
    assert runtime.loaded == "v1" and runtime.active == "v0"
    assert runtime.weights_digest("v1") == parent_digest
    with runtime.exclusive("v1") as served, runtime.candidate(served, deltas["v4"]) as trial:
        digest = trial.weights_digest()
        trial.keep("v4")
    assert runtime.loaded == runtime.active == "v4"
    assert runtime.weights_digest() == digest == replay_digest(deltas, "v4", runtime)
    runtime.set_active("v2")  # the chain bookkeeping knows v4 is loaded: switching is exact
    assert runtime.weights_digest() == replay_digest(deltas, "v2", runtime)
    runtime.set_active("v4")
    assert runtime.weights_digest() == digest
