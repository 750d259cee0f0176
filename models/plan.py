"""How much memory editing a model needs, per process, before any weights are downloaded.

``python -m models.plan llama3-8b --dtype bf16 --batch 100`` answers "which GPU do I need?"
from a ``config.json`` alone: the model is built on the ``meta`` device (shapes, no storage), so
the parameter count is exact; everything else is a formula over the config's shapes.

The stages of an edit run one after another, so a process needs the *resident* bytes (weights
and the exact copies kept for revert) plus the largest of the stage working sets:

* **statistics** (once per model and layer set, then cached on disk): a float64 d_k×d_k running
  sum per edited layer, one batch's float32 product and its float64 copy, and one statistics
  batch's activations up to the deepest edited layer (``editing.stats``).
* **solve**: about five float64 d_k×d_k matrices per layer (C on the device, λC + C_old, the
  Gram matrix, the LU factorisation's copy); layers are solved one at a time.
* **z**, for N facts in one group (``editing.targets``): N × (``n_prefixes`` rewrite rows + 1
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

Checked once against the real thing (saved_tensors_hooks around ``editing.targets._log_probs``,
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

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from models import catalog
from models.load import DTYPES
from models.specs import get_submodule, key_dim, mlp_out_weight, spec_for

GIB = 1024**3
CONFIGS_DIR = Path(__file__).parent / "configs"
DEFAULT_BUDGET_GIB = 80.0
"""An H100 (80 GB); pass ``--budget-gib`` for another device."""
BUDGET_ENV = "MODELEDIT_MEMORY_BUDGET"
EDIT_COPY_SETS = 2
"""Copies of each edited matrix: the runtime's base copy for revert, and the snapshot an edit
(or an apply) takes while it runs."""
SOLVE_MATRICES = 5
"""float64 d_k×d_k matrices alive while one layer is solved (C, λC + C_old, Gram, LU, slack)."""


class InsufficientMemory(ValueError):
    """Not even one fact (or one sequence) fits the budget; the message says what to change."""


class ConfigNotFound(ValueError):
    """A model name or path that gives no config; the message lists what is accepted."""


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


# -- budgets ------------------------------------------------------------------------------------
def z_group_size(plan: MemoryPlan, budget_bytes: int) -> int:
    """The most facts whose z optimisation fits ``budget_bytes`` next to the resident bytes."""
    free = budget_bytes - plan.resident
    n = free // plan.z_per_fact if free > 0 else 0
    if n < 1:
        raise InsufficientMemory(
            f"one fact's z optimisation needs {_gib(plan.z_per_fact)} GiB beside "
            f"{_gib(plan.resident)} GiB of weights and revert copies, but the budget is "
            f"{_gib(budget_bytes)} GiB. "
            + _remedies(plan, "fewer context prefixes (hparam template_prefixes)")
        )
    return int(n)


def eval_batch_size(plan: MemoryPlan, budget_bytes: int) -> int:
    """The most sequences one evaluation pass can score within ``budget_bytes``."""
    free = budget_bytes - plan.resident
    n = free // plan.eval_per_seq if free > 0 else 0
    if n < 1:
        raise InsufficientMemory(
            f"one evaluation sequence needs {_gib(plan.eval_per_seq)} GiB beside "
            f"{_gib(plan.resident)} GiB of weights and revert copies, but the budget is "
            f"{_gib(budget_bytes)} GiB. {_remedies(plan, 'shorter rows')}"
        )
    return int(n)


def _remedies(plan: MemoryPlan, local: str) -> str:
    options = ["a smaller dtype (--dtype bf16)"] if plan.dtype == "float32" else []
    options += [local, "a device with more memory",
                f"a larger budget ({BUDGET_ENV} / --memory-budget) if the device has it"]
    return "Use " + ", ".join(options) + "."


def parse_bytes(text: str) -> int:
    """``"40GiB"``, ``"40G"``, ``"512MiB"`` or a plain byte count."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(i?B)?\s*", text, flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"{text!r} is not a size; write e.g. 40GiB, 512MiB or a byte count")
    scale = 1024 ** "_KMGT".index(match.group(2).upper() or "_")
    return int(float(match.group(1)) * scale)


def device_budget(device: torch.device | str, margin_fraction: float = 0.05) -> int:
    """Bytes this process can still use on ``device``, less a safety margin.

    ``MODELEDIT_MEMORY_BUDGET`` (e.g. ``40GiB``) overrides the measurement. CUDA: free memory
    plus what PyTorch's allocator has reserved but not used, less max(512 MiB, 5% of the
    device). CPU: available RAM (psutil if installed, else /proc/meminfo), less the same.
    """
    if os.environ.get(BUDGET_ENV):
        return parse_bytes(os.environ[BUDGET_ENV])
    device = torch.device(device)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    else:
        free = total = _available_ram()
    return max(0, free - max(512 * 1024**2, int(margin_fraction * total)))


def _available_ram() -> int:
    try:
        import psutil  # optional: not a dependency
    except ImportError:
        meminfo = Path("/proc/meminfo")
        if not meminfo.exists():
            raise RuntimeError(
                f"cannot measure free RAM without psutil or /proc/meminfo; set {BUDGET_ENV}"
            ) from None
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"/proc/meminfo has no MemAvailable; set {BUDGET_ENV}") from None
    return int(psutil.virtual_memory().available)


# -- configs ------------------------------------------------------------------------------------
def shipped_configs() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.json"))


def config_from_json(path: Path) -> PretrainedConfig:
    data = json.loads(path.read_text())
    model_type = data.pop("model_type", None)
    if not model_type:
        raise ConfigNotFound(f"{path} has no model_type; is it a Hugging Face config.json?")
    return AutoConfig.for_model(model_type, **data)


def load_config(name_or_path: str | None) -> tuple[str, PretrainedConfig]:
    """(display name, config) for a shipped config name, a config.json, a model directory,
    or a name :func:`models.load.resolve` knows (the default model, a .gguf, a cached HF id)."""
    from models.load import ModelNotAvailable, resolve

    if name_or_path and (CONFIGS_DIR / f"{name_or_path}.json").exists():
        return name_or_path, config_from_json(CONFIGS_DIR / f"{name_or_path}.json")
    path = Path(name_or_path or "").expanduser()
    if name_or_path and path.is_file() and path.suffix == ".json":
        return path.parent.name or path.stem, config_from_json(path)
    if name_or_path and (path / "config.json").is_file():
        return path.name, config_from_json(path / "config.json")
    try:
        name, source = resolve(name_or_path)
        if (Path(source) / "config.json").is_file():
            return name, config_from_json(Path(source) / "config.json")
        return name, AutoConfig.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, ModelNotAvailable) as exc:
        raise ConfigNotFound(
            f"no config for {name_or_path!r} on this machine ({exc}). Give one of "
            f"{', '.join(shipped_configs())}, a config.json, or a model directory."
        ) from exc


def default_layers(name: str, config: PretrainedConfig) -> tuple[int, ...]:
    """The preset's edited layers for ``name``, else the generic ones for its depth."""
    return catalog.default_layers(name, config.num_hidden_layers)


def parse_layers(text: str) -> tuple[int, ...]:
    """``"4-8"`` or ``"4,5,6"``."""
    if "-" in text:
        start, end = (int(x) for x in text.split("-", 1))
        return tuple(range(start, end + 1))
    return tuple(int(x) for x in text.split(","))


# -- command line -------------------------------------------------------------------------------
def _gib(n: int) -> str:
    return f"{n / GIB:.2f}"


def _span(layers: Sequence[int]) -> str:
    if list(layers) == list(range(layers[0], layers[-1] + 1)) and len(layers) > 1:
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))


def _fits(plan: MemoryPlan, budget: int) -> tuple[int, int]:
    """(z group size, evaluation batch) within ``budget``; 0 where not even one fits."""
    out: list[int] = []
    for fn in (z_group_size, eval_batch_size):
        try:
            out.append(fn(plan, budget))
        except InsufficientMemory:
            out.append(0)
    return out[0], out[1]


def describe(name: str, plan: MemoryPlan, n_facts: int, budget: int, budget_note: str) -> str:
    """The per-process table for one model."""
    try:
        fit = (f"z group up to {z_group_size(plan, budget)} facts, "
               f"evaluation batch up to {eval_batch_size(plan, budget)}")
    except InsufficientMemory as exc:
        fit = str(exc)
    n_edit = len(plan.layers)
    rows = [
        ("weights", plan.weights),
        (f"edit copies ({EDIT_COPY_SETS} x {n_edit} MLP output matrices)", plan.edit_copies),
        ("statistics (first edit only, then cached)", plan.stats),
        ("solve (one layer at a time)", plan.solve),
        (f"z for {n_facts} facts ({_gib(plan.z_per_fact)} per fact)", plan.z_bytes(n_facts)),
        (f"evaluation (batch {plan.settings.eval_batch})", plan.eval_bytes()),
        ("peak = weights + copies + largest stage", plan.total(n_facts)),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [
        f"{name}: {plan.model_type}, {plan.n_params / 1e9:.2f} B parameters, {plan.dtype}, "
        f"edited layers {_span(plan.layers)}, z at layer {plan.z_layer}",
        f"{'per process':<{width}}  {'GiB':>8}",
    ]
    lines += [f"{label:<{width}}  {_gib(value):>8}" for label, value in rows]
    lines += [
        f"{'host RAM: covariance cache (float64)':<{width}}  {_gib(plan.host_covariances):>8}",
        f"budget {_gib(budget)} GiB ({budget_note}): {fit}",
    ]
    return "\n".join(lines)


def compare(plans: Sequence[tuple[str, MemoryPlan]], n_facts: int, budget: int) -> str:
    """One markdown row per model (the README table)."""
    head = ["model", "params", "weights", "edit copies", "statistics", "solve",
            f"z ({n_facts} facts)", f"eval ({plans[0][1].settings.eval_batch})", "peak",
            f"z group @ {budget / GIB:g} GiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, plan in plans:
        cells = [name, f"{plan.n_params / 1e9:.2f} B", _gib(plan.weights), _gib(plan.edit_copies),
                 _gib(plan.stats), _gib(plan.solve), _gib(plan.z_bytes(n_facts)),
                 _gib(plan.eval_bytes()), _gib(plan.total(n_facts)), str(_fits(plan, budget)[0])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


HELP = """\
lines (GiB per process; the stages run one after another):
  weights       parameters x dtype size (exact: the model is built on the meta device)
  edit copies   exact copies of the edited MLP output matrices, for bit-identical revert
                (the runtime's base copy plus the snapshot taken while an edit runs)
  statistics    float64 d_k x d_k running sums for every edited layer, one batch's product,
                and one statistics batch's activations (first edit only; cached on disk after)
  solve         ~5 float64 d_k x d_k matrices while one layer is solved
  z             forward + backward through the layers above the z layer for N facts in one
                group: (n_prefixes + 1) rows of --tokens tokens per fact, the prefix KV cache,
                float32 log-softmax over the vocabulary at the prediction positions. An
                estimate that errs high (see the models/plan.py docstring for the formula)
  evaluation    forward only, --eval-batch sequences, float32 logits at every position
  peak          weights + copies + the largest stage
  host RAM      the covariance cache the editor keeps in RAM (float64, every edited layer)
The largest z group and evaluation batch that fit --budget-gib (default 80: an H100) follow.
Give several models for one markdown row each (the README table)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m models.plan",
        description="Memory needed to edit a model, per process, from its config alone.",
        epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help=f"shipped config ({', '.join(shipped_configs())}), a config.json, a "
                             "model directory, or a local model name (smollm2-135m)")
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES), help="weights (bf16)")
    parser.add_argument("--batch", type=int, default=100, help="facts in one z group (100)")
    parser.add_argument("--budget-gib", type=float, default=DEFAULT_BUDGET_GIB,
                        help="device memory to fit (default 80: an H100)")
    parser.add_argument("--memory-budget", type=parse_bytes, default=None, metavar="SIZE",
                        help="the same as a size, e.g. 40GiB (wins over --budget-gib)")
    parser.add_argument("--layers", type=parse_layers, default=None,
                        help="edited layers, e.g. 4-8 (default: the model's preset)")
    parser.add_argument("--z-layer", type=int, default=None,
                        help="z layer (default the first edited, as FE; MEMIT: the last)")
    parser.add_argument("--prefixes", type=int, default=6,
                        help="rows per fact: bare prompt + context prefixes (6)")
    parser.add_argument("--tokens", type=int, default=24,
                        help="padded tokens per row: the group's longest row (24)")
    parser.add_argument("--eval-batch", type=int, default=32,
                        help="evaluation sequences per pass (32)")
    parser.add_argument("--json", action="store_true", help="print JSON (bytes) instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    dtype = DTYPES[args.dtype]
    budget = args.memory_budget or int(args.budget_gib * GIB)
    plans: list[tuple[str, MemoryPlan]] = []
    try:
        for model in args.models:
            name, config = load_config(model)
            layers = args.layers or default_layers(name, config)
            plans.append((name, plan_for_config(
                config, dtype, layers, z_layer=args.z_layer, n_prefixes=args.prefixes,
                tokens_per_row=args.tokens, eval_batch=args.eval_batch,
            )))
    except (ConfigNotFound, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        out = []
        for name, plan in plans:
            z_group, eval_fit = _fits(plan, budget)
            out.append({"model": name, **plan.to_dict(args.batch), "budget": budget,
                        "z_group_size": z_group, "eval_batch_size": eval_fit})
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
    elif len(plans) == 1:
        given = args.memory_budget or args.budget_gib != DEFAULT_BUDGET_GIB
        note = "as given" if given else "an H100; --budget-gib"
        print(describe(plans[0][0], plans[0][1], args.batch, budget, note))
    else:
        print(compare(plans, args.batch, budget))
    return 0


if __name__ == "__main__":
    sys.exit(main())
