"""The memory plan's formulas: the bytes each stage of an edit needs, from a model's shapes.

``python -m models.plan llama3-8b --dtype bf16 --batch 100`` answers "which GPU do I need?"
from a ``config.json`` alone: the model is built on the ``meta`` device (shapes, no storage), so
the parameter count is exact; everything else is a formula over the config's shapes.

The stages of an edit run one after another, so a process needs the *resident* bytes (weights
and the exact copies kept for revert) plus the largest of the stage working sets:

* **statistics** (once per model and layer set, then cached on disk): a float64 d_k×d_k running
  sum per edited layer, one batch's float32 product and its float64 copy, and one statistics
  batch's activations up to the deepest edited layer (``editing.solve.stats``).
* **solve**: about five float64 d_k×d_k matrices per layer (C on the device, λC + C_old, the
  Gram matrix, the LU factorisation's copy); layers are solved one at a time.
* **z**, for N facts in one group (``editing.targets.z``): N × (``n_prefixes`` rewrite rows + 1
  "essence" row), each ``tokens_per_row`` tokens, forward and backward through every layer
  above the z layer, plus the prefix KV cache and float32 log-softmaxes at the prediction
  positions. Linear in N: ``z_per_fact`` bytes each.
* **evaluation**: forward only (``inference_mode``), ``eval_batch`` sequences per pass.

Estimate, not measurement. Autograd keeps, per token and per layer above the z layer, with
every weight frozen (a linear layer then saves no input; only the nonlinearities and the
attention products do), in bytes, with ``s`` the dtype size::

    s·(3·hidden + m·intermediate) + norms·4·hidden + heads·key_len·(4 + s)

``3·hidden``: query, key and value (keys/values expanded to every head); ``m``: 3 tensors for a
gated MLP (gate, act(gate), up), 4 for a GELU-tanh MLP (its Python composition saves four);
``norms``: the block's norm layers, each saving its input upcast to float32; the last term is
eager attention's probabilities (softmax in float32 plus the cast copy). SDPA and
flash attention save less (no probabilities), so this errs high; the unit test measures the
real saved tensors of tiny models with ``saved_tensors_hooks`` and checks the formula is at
least that and at most 1.6 times it. One more layer's worth is added for the backward pass's
working memory. ``tokens_per_row`` is the *padded* row length: a group is padded to its longest
row. The z figures also assume every token of a row is re-run each step, as without the prefix
cache; with it (the editor's default) only the tokens from the fact token on are.

Checked once against the real thing (saved_tensors_hooks around ``editing.targets.z._log_probs``,
SmolLM2-135M, float32, z at layer 2, 6 prefixes + essence): 4 facts, rows padded to 21 tokens,
no prefix cache: 500 MiB saved, plan 549 MiB (2 facts, 20 tokens: 237 vs 262). With the prefix
cache the same 4 facts saved 209 MiB: the plan is conservative by ~2.4x there.

Not modelled: the CUDA context (~0.5 GiB, outside ``torch.cuda.mem_get_info``'s free memory
once created), allocator fragmentation (hence the margin in :func:`device_budget`), small
buffers (rotary tables).

Importable by the editor: depends on torch, transformers and ``models.*`` only (the layering
rule in docs/INTERFACES.md); default layers come from :mod:`models.catalog`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig

from models.specs import get_submodule, key_dim, mlp_out_weight, spec_for

GIB = 1024**3
EDIT_COPY_SETS = 2
"""Copies of each edited matrix: the runtime's base copy for revert, and the snapshot an edit
(or an apply) takes while it runs."""
SOLVE_MATRICES = 5
"""float64 d_k×d_k matrices alive while one layer is solved (C, λC + C_old, Gram, LU, slack)."""



@dataclass(frozen=True)
class Shapes:
    """What the formulas need, read off a (meta or real) model."""

    model_type: str
    n_params: int
    n_layers: int
    hidden: int
    d_k: int
    """Input width of the edited MLP output matrix (the intermediate size)."""
    heads: int
    kv_dim: int
    """Width of the keys (and of the values) one token caches per layer."""
    vocab: int
    norms_per_block: int
    mlp_tensors: int
    """Intermediate-width tensors autograd keeps per token in the MLP (3 gated, 4 GELU-tanh)."""


@dataclass(frozen=True)
class PlanSettings:
    """How an edit runs, as far as memory goes; the defaults are the editor's."""

    n_prefixes: int = 6
    """z rows per fact besides the essence row: the bare prompt and the context prefixes."""
    tokens_per_row: int = 24
    """Padded length of a z row (a group pads to its longest) and of an evaluation sequence."""
    prefix_tokens: int = 12
    """Tokens of a z row before the fact token, held in the KV cache (0: no prefix cache)."""
    target_tokens: int = 2
    """Target tokens per row: the positions whose log-softmax over the vocabulary z keeps."""
    stats_batch: int = 16
    stats_seq_len: int = 128
    eval_batch: int = 32

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            least = 0 if name == "prefix_tokens" else 1
            if not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per process for editing one model; stages are sequential (see module docstring)."""

    model_type: str
    dtype: str
    n_params: int
    layers: tuple[int, ...]
    z_layer: int
    weights: int
    edit_copies: int
    stats: int
    solve: int
    z_per_fact: int
    eval_per_seq: int
    host_covariances: int
    """Host RAM the covariance cache keeps (float64, every edited layer); not device memory."""
    settings: PlanSettings = PlanSettings()

    @property
    def resident(self) -> int:
        """Bytes held through every stage: the weights and the copies kept for exact revert."""
        return self.weights + self.edit_copies

    def z_bytes(self, n_facts: int) -> int:
        return n_facts * self.z_per_fact

    def eval_bytes(self, batch: int | None = None) -> int:
        return (self.settings.eval_batch if batch is None else batch) * self.eval_per_seq

    def total(self, n_facts: int, eval_batch: int | None = None) -> int:
        """Peak bytes of an edit of ``n_facts`` in one z group, then an evaluation."""
        stages = (self.stats, self.solve, self.z_bytes(n_facts), self.eval_bytes(eval_batch))
        return self.resident + max(stages)

    def to_dict(self, n_facts: int | None = None) -> dict[str, Any]:
        """JSON-able figures (bytes); with ``n_facts``, also z and the peak for that many."""
        out = asdict(self)
        out["layers"] = list(self.layers)
        out["resident"] = self.resident
        out["eval"] = self.eval_bytes()
        if n_facts is not None:
            out["n_facts"] = n_facts
            out["z"] = self.z_bytes(n_facts)
            out["peak"] = self.total(n_facts)
        return out


# -- shapes -------------------------------------------------------------------------------------
def meta_model(config: PretrainedConfig, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The model with shapes and no storage: exact parameter counts, no download, ~0.5 s."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def shapes_of(model: nn.Module) -> Shapes:
    """Read the sizes the formulas need from a model (any device, meta included)."""
    config = model.config
    spec = spec_for(model)
    hidden = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    block = get_submodule(model, spec.blocks)[0]
    mlp = get_submodule(block, spec.mlp_out.rpartition(".")[0])
    d_k = key_dim(model, 0)
    wide = [p for p in mlp.parameters() if p.dim() == 2 and d_k in p.shape]
    norms = [m for m in block.modules() if "norm" in type(m).__name__.lower()]
    return Shapes(
        model_type=config.model_type,
        n_params=sum(p.numel() for p in model.parameters()),
        n_layers=int(config.num_hidden_layers),
        hidden=hidden,
        d_k=d_k,
        heads=heads,
        kv_dim=int(kv_heads * head_dim),
        vocab=int(model.get_output_embeddings().weight.shape[0]),
        norms_per_block=max(1, len(norms)),
        mlp_tensors=3 if len(wide) >= 3 else 4,
    )


# -- formulas -----------------------------------------------------------------------------------
def grad_bytes_per_token(shapes: Shapes, dtype_size: int, key_len: int) -> int:
    """Bytes autograd keeps per token in one layer with frozen weights (module docstring)."""
    s = dtype_size
    return (
        s * (3 * shapes.hidden + shapes.mlp_tensors * shapes.d_k)
        + shapes.norms_per_block * 4 * shapes.hidden
        + shapes.heads * key_len * (4 + s)
    )


def forward_bytes_per_token(shapes: Shapes, dtype_size: int) -> int:
    """Transient bytes per token of one layer's inference forward (residual, normed input,
    attention output, MLP intermediates)."""
    return dtype_size * (4 * shapes.hidden + shapes.mlp_tensors * shapes.d_k)


def _stats_bytes(shapes: Shapes, s: int, n_edit: int, batch: int, seq_len: int) -> int:
    square = shapes.d_k * shapes.d_k
    tokens = batch * seq_len
    running_sums = n_edit * square * 8
    batch_product = square * (4 + 8)  # float32 Kᵀ K, then its float64 copy
    captured = n_edit * tokens * shapes.d_k * s + tokens * shapes.d_k * 4
    scores = batch * shapes.heads * seq_len**2 * (4 + s)
    forward = tokens * forward_bytes_per_token(shapes, s) + scores
    return running_sums + batch_product + captured + forward


def _z_per_fact(shapes: Shapes, s: int, z_layer: int, settings: PlanSettings) -> int:
    tokens = settings.tokens_per_row
    rows = settings.n_prefixes + 1  # rewrite rows (one per context prefix) + the essence row
    layers_with_grad = shapes.n_layers - z_layer  # those above z, plus one for backward work
    activations = rows * tokens * layers_with_grad * grad_bytes_per_token(shapes, s, tokens)
    kv_cache = rows * settings.prefix_tokens * 2 * shapes.kv_dim * shapes.n_layers * s
    positions = settings.n_prefixes * settings.target_tokens + 1
    # bf16 logits, float32 logits, saved log-softmax, and its gradient (float32) at once
    logits = positions * shapes.vocab * (12 + s) + shapes.vocab * 4  # + the essence's KL reference
    optimizer = 5 * shapes.hidden * 4  # delta, its grad, two Adam moments, h
    return activations + kv_cache + logits + optimizer


def _eval_per_seq(shapes: Shapes, s: int, tokens: int) -> int:
    logits = tokens * shapes.vocab * (4 + s)
    return logits + tokens * forward_bytes_per_token(shapes, s) + shapes.heads * tokens**2 * (4 + s)


def plan_for_shapes(
    shapes: Shapes,
    dtype: torch.dtype,
    layers: Sequence[int],
    settings: PlanSettings = PlanSettings(),
    z_layer: int | None = None,
) -> MemoryPlan:
    """The plan from shapes; :func:`plan_for_config` and :func:`plan_for_model` read them."""
    layers = tuple(int(x) for x in layers)
    if not layers or min(layers) < 0 or max(layers) >= shapes.n_layers:
        raise ValueError(f"layers {layers} are not within the model's {shapes.n_layers} layers")
    z = layers[0] if z_layer is None else z_layer
    if not 0 <= z < shapes.n_layers:
        raise ValueError(f"z layer {z} is not within the model's {shapes.n_layers} layers")
    s = torch.empty((), dtype=dtype).element_size()
    n_edit = len(layers)
    square = shapes.d_k * shapes.d_k
    return MemoryPlan(
        model_type=shapes.model_type,
        dtype=str(dtype).removeprefix("torch."),
        n_params=shapes.n_params,
        layers=layers,
        z_layer=z,
        weights=shapes.n_params * s,
        edit_copies=EDIT_COPY_SETS * n_edit * shapes.hidden * shapes.d_k * s,
        stats=_stats_bytes(shapes, s, n_edit, settings.stats_batch, settings.stats_seq_len),
        solve=SOLVE_MATRICES * square * 8,
        z_per_fact=_z_per_fact(shapes, s, z, settings),
        eval_per_seq=_eval_per_seq(shapes, s, settings.tokens_per_row),
        host_covariances=n_edit * square * 8,
        settings=settings,
    )


def plan_for_config(
    config: PretrainedConfig,
    dtype: torch.dtype,
    layers: Sequence[int],
    *,
    z_layer: int | None = None,
    **settings: int,
) -> MemoryPlan:
    """Plan from a config alone (the model is built on ``meta``: no weights needed).

    ``z_layer`` defaults to the first edited layer (FE; MEMIT optimises z at the last);
    ``settings`` are :class:`PlanSettings`' fields (``n_prefixes``, ``tokens_per_row``, ...).
    """
    plan_settings = PlanSettings(**settings)
    return plan_for_shapes(shapes_of(meta_model(config, dtype)), dtype, layers, plan_settings,
                           z_layer)


def plan_for_model(
    model: nn.Module,
    layers: Sequence[int],
    *,
    z_layer: int | None = None,
    **settings: int,
) -> MemoryPlan:
    """The same figures for a loaded model (its own shapes and dtype; nothing is allocated)."""
    dtype = mlp_out_weight(model, 0).dtype
    return plan_for_shapes(shapes_of(model), dtype, layers, PlanSettings(**settings), z_layer)
