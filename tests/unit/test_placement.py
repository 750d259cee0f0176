"""Models placed by accelerate (``device_map``): edited like a model on one device.

This machine has one device, the CPU, so the map sends every module to it; ``force_hooks``
still wraps every module in accelerate's device-moving hooks, which is the code path of a
model sharded over several GPUs. Offloaded weights cannot be edited in place: refused first.
"""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import torch
from accelerate import dispatch_model

from editing import Editor
from editing.weights.delta import DeltaError
from models.placement import input_device, module_device
from models.specs import spec_for
from tests.conftest import FACTS, TINY_HPARAMS

HP = TINY_HPARAMS.replace(z_steps=10, clamp_norm_factor=10.0, kl_factor=0.0, weight_decay=0.0,
                          covariance_weight=1.0)
ROOT = Path(__file__).resolve().parents[2]


def explicit_map(model: torch.nn.Module, edited_device: str = "cpu") -> dict[str, str]:
    """Embeddings, each block and the head as separate entries, as ``device_map='auto'`` makes."""
    spec = spec_for(model)
    n = model.config.num_hidden_layers
    embeddings = [name for name, module in model.named_modules()
                  if module is model.get_input_embeddings()]
    extra = ["transformer.wpe"] if model.config.model_type == "gpt2" else ["model.rotary_emb"]
    device_map = {name: "cpu" for name in embeddings + extra + [spec.final_norm]}
    device_map.update({f"{spec.blocks}.{i}": "cpu" for i in range(n)})
    for layer in HP.layers:
        device_map[f"{spec.blocks}.{layer}"] = edited_device
    device_map[spec.lm_head] = "cpu"
    return device_map


def test_dispatched_model_edits_to_the_same_delta(tiny, corpus, tmp_path) -> None:
    model, tok = tiny
    plain = Editor(model, tok, hparams=HP, cache_dir=tmp_path / "a", corpus=corpus).edit(FACTS[:2]).delta
    hooked = dispatch_model(copy.deepcopy(model), device_map=explicit_map(model), force_hooks=True)
    assert hasattr(hooked.get_input_embeddings(), "_hf_hook"), "accelerate's hooks are in place"
    assert input_device(hooked) == torch.device("cpu")
    delta = Editor(hooked, tok, hparams=HP, cache_dir=tmp_path / "b", corpus=corpus).edit(FACTS[:2]).delta
    assert delta.layers == plain.layers
    for layer in plain.layers:
        torch.testing.assert_close(delta.updates[layer].dense(), plain.updates[layer].dense(),
                                   rtol=1e-4, atol=1e-5)


def test_offloaded_edited_layer_is_refused_before_any_compute(tiny, corpus, tmp_path) -> None:
    model, tok = tiny
    offloaded = dispatch_model(copy.deepcopy(model), device_map=explicit_map(model, "disk"),
                               offload_dir=str(tmp_path / "offload"))
    assert module_device(offloaded) == torch.device("cpu")
    editor = Editor(offloaded, tok, hparams=HP, cache_dir=tmp_path, corpus=corpus)
    with pytest.raises(DeltaError, match="offloaded"):
        editor.edit(FACTS[:1])


def test_no_code_asks_for_the_model_device_of_its_first_parameter() -> None:
    """``next(model.parameters()).device`` is wrong for a sharded model; models.placement
    gives the device of the module a tensor meets."""
    offenders = []
    for folder in ("app", "editing", "models", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Attribute) and node.attr == "device"
                        and isinstance(node.value, ast.Call)
                        and getattr(node.value.func, "id", None) == "next"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders
