"""Hyper-parameter presets per model, as typed values.

Edited layers come from :data:`models.catalog.PRESET_LAYERS` (the memory planner needs them
without editing); the rest of each preset is here.

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
from models.catalog import PRESET_LAYERS, canonical_name, generic_layers

PRESETS: dict[str, EditHparams] = {
    "smollm2-135m": EditHparams(
        layers=PRESET_LAYERS["smollm2-135m"], v_lr=0.5, v_steps=25, clamp_norm_factor=0.75,
        weight_decay=0.5, kl_factor=0.0625, mom2_update_weight=15000.0, stats_samples=1000,
        stats_seq_len=128,
    ),
    "llama3-8b": EditHparams(
        layers=PRESET_LAYERS["llama3-8b"], v_lr=0.1, v_steps=35, clamp_norm_factor=0.75,
        weight_decay=0.5, kl_factor=0.0625, mom2_update_weight=15000.0, stats_samples=100_000,
        stats_seq_len=128,
    ),
    "gpt2-xl": EditHparams(
        layers=PRESET_LAYERS["gpt2-xl"], v_lr=0.5, v_steps=20, clamp_norm_factor=0.75,
        weight_decay=0.5, kl_factor=0.0625, mom2_update_weight=15000.0, stats_samples=100_000,
    ),
    "gpt-j-6b": EditHparams(
        layers=PRESET_LAYERS["gpt-j-6b"], v_lr=0.5, v_steps=25, clamp_norm_factor=0.75,
        weight_decay=0.5, kl_factor=0.0625, mom2_update_weight=15000.0, stats_samples=100_000,
    ),
}


def generic_preset(n_layers: int) -> EditHparams:
    """For models without a preset: default settings on :func:`models.catalog.generic_layers`."""
    return EditHparams(layers=generic_layers(n_layers))


def preset_for(name: str | None, model: nn.Module | None = None) -> EditHparams:
    """The preset for a model name (or alias); for unknown names, :func:`generic_preset`."""
    key = canonical_name(name)
    if key in PRESETS:
        return PRESETS[key]
    if model is None:
        known = ", ".join(sorted(PRESETS))
        raise KeyError(f"no preset named {name!r} (known: {known}); pass the model for a generic one")
    return generic_preset(model.config.num_hidden_layers)
