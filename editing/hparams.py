"""Hyper-parameters of one editing run, as a typed value (never a path to a JSON file)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

TargetStrategy = Literal["forward_replay", "backward_spread", "per_layer", "one_layer"]
STRATEGIES: tuple[str, ...] = ("forward_replay", "backward_spread", "per_layer", "one_layer")

METHODS: dict[str, TargetStrategy] = {
    "fe": "forward_replay",
    "memit": "backward_spread",
    "per_layer": "per_layer",
    "one_layer": "one_layer",
}
"""User-facing method names and the target strategy each one uses."""

@dataclass(frozen=True)
class EditHparams:
    """Everything that determines an edit besides the model and the facts."""

    layers: tuple[int, ...]
    """Consecutive edited layers, shallow to deep."""
    strategy: TargetStrategy = "forward_replay"
    # z optimisation (DESIGN §1.3)
    v_lr: float = 0.5
    v_steps: int = 25
    clamp_norm_factor: float = 0.75
    weight_decay: float = 0.5
    kl_factor: float = 0.0625
    nll_stop: float = 0.05
    replay_on_templates: bool = False
    """FE only: replay h+delta on every templated prompt and average (False: bare prompt, as the paper)."""
    # solve (DESIGN §1.5)
    mom2_update_weight: float = 15000.0
    l2: float = 0.0
    use_old_keys: bool = True
    # covariance statistics (DESIGN §1.6)
    stats_samples: int = 1000
    stats_seq_len: int = 128
    # context templates (DESIGN §1.1)
    template_prefixes: tuple[str, ...] = ("The", "Therefore", "Because", "I", "You")
    template_tokens: int = 10

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("layers must name at least one layer")
        if list(self.layers) != sorted(set(self.layers)):
            raise ValueError(f"layers must be increasing and distinct, got {self.layers}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy {self.strategy!r} unknown; use one of {STRATEGIES}")

    @property
    def edited_layers(self) -> tuple[int, ...]:
        """The layers whose weights change (``one_layer`` edits only the last one)."""
        return self.layers[-1:] if self.strategy == "one_layer" else self.layers

    def with_method(self, method: str) -> EditHparams:
        """Same settings, another method (``fe``, ``memit``, ``per_layer``, ``one_layer``)."""
        if method not in METHODS:
            raise ValueError(f"method {method!r} unknown; use one of {sorted(METHODS)}")
        return replace(self, strategy=METHODS[method])

    def replace(self, **changes: Any) -> EditHparams:
        return replace(self, **changes)

    def with_overrides(self, overrides: dict[str, Any]) -> EditHparams:
        """These settings with ``overrides`` (a plain dict: the CLI's ``--hparam``s, or
        ``MODELEDIT_HPARAMS``); unknown keys raise ValueError, lists become tuples."""
        if not overrides:
            return self
        return EditHparams.from_dict({**self.to_dict(), **overrides})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        d["template_prefixes"] = list(self.template_prefixes)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EditHparams:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown hyper-parameters: {sorted(unknown)}")
        data = dict(data)
        for key in ("layers", "template_prefixes"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)
