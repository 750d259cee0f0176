"""Hyper-parameter presets per model, as typed values.

``smollm2-135m``: layers chosen by ``python -m bench.layer_sweep --n 20 --starts 2,4,6`` (FE on
the last 20 MCF records, which the reproduction benchmark does not use). Efficacy /
generalization / specificity Success: layers 2-6 100 / 85 / 91.5 (KL 0.017), 4-8 95 / 72.5 /
90.5 (KL 0.006), 6-10 100 / 75 / 91 (KL 0.01); 2-6 has the best harmonic mean (91.8). Twenty
records is a small sample: rerun the sweep with more when the CPU allows.

λ (``mom2_update_weight``) stays at the paper's 15000. ``python -m bench.tradeoff`` on the first
100 MCF records in one batch gives FE efficacy 95 / generalization 92.5 at KL 0.14, and 72 / 71
at KL 0.028 with λ 50000, where MEMIT reaches 73 / 70 at KL 0.026 with λ 15000: on layers 2-6
both methods lie on one efficacy/KL curve (on layers 4-8 FE's curve is 5-15 points higher).
Efficacy is what a user of the service asks for, so the preset favours it; set
``mom2_update_weight`` higher (``MODELEDIT_HPARAMS``) for more conservative edits. On those 100
records layers 4-8 do as well as 2-6 (96 / 92 at KL 0.116); the window was chosen on held-out
records and is not re-tuned on the evaluation set. The other presets are the FE paper's settings.
"""

from __future__ import annotations

from torch import nn

from editing.hparams import EditHparams

PRESETS: dict[str, EditHparams] = {
    "smollm2-135m": EditHparams(
        layers=(2, 3, 4, 5, 6), v_lr=0.5, v_steps=25, clamp_norm_factor=0.75, weight_decay=0.5,
        kl_factor=0.0625, mom2_update_weight=15000.0, stats_samples=1000, stats_seq_len=128,
    ),
    "llama3-8b": EditHparams(
        layers=(4, 5, 6, 7, 8), v_lr=0.1, v_steps=35, clamp_norm_factor=0.75, weight_decay=0.5,
        kl_factor=0.0625, mom2_update_weight=15000.0, stats_samples=100_000, stats_seq_len=128,
    ),
    "gpt2-xl": EditHparams(
        layers=(13, 14, 15, 16, 17), v_lr=0.5, v_steps=20, clamp_norm_factor=0.75,
        weight_decay=0.5, kl_factor=0.0625, mom2_update_weight=15000.0, stats_samples=100_000,
    ),
    "gpt-j-6b": EditHparams(
        layers=(3, 4, 5, 6, 7, 8), v_lr=0.5, v_steps=25, clamp_norm_factor=0.75,
        weight_decay=0.5, kl_factor=0.0625, mom2_update_weight=15000.0, stats_samples=100_000,
    ),
}

ALIASES: dict[str, str] = {
    "smollm2-135m-instruct": "smollm2-135m",
    "huggingfacetb/smollm2-135m-instruct": "smollm2-135m",
    "huggingfacetb/smollm2-135m": "smollm2-135m",
    "meta-llama/meta-llama-3-8b": "llama3-8b",
    "meta-llama/meta-llama-3-8b-instruct": "llama3-8b",
    "meta-llama/llama-3.1-8b": "llama3-8b",
    "openai-community/gpt2-xl": "gpt2-xl",
    "eleutherai/gpt-j-6b": "gpt-j-6b",
}


def generic_preset(n_layers: int) -> EditHparams:
    """For models without a preset: up to five consecutive layers starting ~15% deep.

    Early-middle MLPs are where causal tracing finds factual recall in every model family
    studied (ROME/MEMIT); a sweep (bench/layer_sweep.py) should replace this for real use.
    """
    width = max(1, min(5, n_layers // 2))
    start = min(max(0, round(0.15 * n_layers)), max(0, n_layers - 1 - width))
    return EditHparams(layers=tuple(range(start, start + width)))


def preset_for(name: str | None, model: nn.Module | None = None) -> EditHparams:
    """The preset for a model name (or alias); for unknown names, :func:`generic_preset`."""
    key = (name or "").lower()
    key = ALIASES.get(key, key)
    if key in PRESETS:
        return PRESETS[key]
    if model is None:
        known = ", ".join(sorted(PRESETS))
        raise KeyError(f"no preset named {name!r} (known: {known}); pass the model for a generic one")
    return generic_preset(model.config.num_hidden_layers)
