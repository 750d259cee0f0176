"""Hyper-parameters of one editing run, as a typed value (never a path to a JSON file).

The method is a name in :data:`editing.methods.registry.METHODS`; ``strategy`` stays a field
because hyper-parameters stored before methods were recorded name only the strategy (their
method is the strategy's default one).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from types import ModuleType
from typing import Any


def _registry() -> ModuleType:
    """The method registry, imported at call time: the built-in methods import the modules
    that take an ``EditHparams``, so a top-level import here would be circular."""
    from editing.methods import registry

    return registry

@dataclass(frozen=True)
class EditHparams:
    """Everything that determines an edit besides the model and the facts."""

    layers: tuple[int, ...]
    """Consecutive edited layers, shallow to deep."""
    strategy: str = "forward_replay"
    """The method's target strategy (kept for hyper-parameters stored without ``method``)."""
    method: str | None = None
    """A registered method using ``strategy``; None: the strategy's default method."""
    # z optimisation (docs/design.md §3)
    v_lr: float = 0.5
    v_steps: int = 25
    clamp_norm_factor: float = 0.75
    weight_decay: float = 0.5
    kl_factor: float = 0.0625
    nll_stop: float = 0.05
    z_stop: str = "nll"
    """Early stop of one request's z: ``"nll"`` when its NLL falls below ``nll_stop``;
    ``"total"`` when NLL + KL + weight decay does (the FE/MEMIT reference code's rule)."""
    decay: str = "squared"
    """z weight decay: ``"squared"`` ‖δ‖²/‖h‖² (scale-free); ``"linear"`` ‖δ‖/‖h‖², the
    reference code's form, which fades as ‖h‖ grows (almost nothing on a model with large
    hidden states)."""
    essence_kl: str = "initial_now"
    """Direction of the z step's KL term on the essence prompt: ``"initial_now"``
    KL(initial ‖ now), ours; ``"now_initial"`` KL(now ‖ initial), the reference code's."""
    chat_prefix: bool = False
    """Add the model's chat template, the assistant stating the fact, to the context prefixes
    (``editing.templates.chat_prefix``): z and the keys then see the fact in a chat turn."""
    name_kl_factor: float = 0.0
    """Weight of a z term that keeps the model's predictions of the subject's tokens where the
    name is written again after a mention (``editing.encoding.encode_names``); 0: off."""
    name_context: str = "sentence"
    """Where the name term's rows mention the subject first: ``"sentence"``, the bare name
    before the request's sentence; ``"chat"``, a user's question naming it in the chat
    template, the assistant's turn then writing the sentence: the context in which the edit
    was measured to break names (``bench.name_break``), with a question of its own."""
    chat_question: bool = False
    """Add, per request, the chat template with the request's ``question`` (its cloze sentence
    when it has none) as the user's message and the cloze prompt as the assistant's start
    (``editing.templates.question_prefix``) to the context prefixes: z and the keys then see
    the fact where a user asks it."""
    replay_on_templates: bool = False
    """FE only: replay h+delta on every templated prompt and average (False: bare prompt, as the paper)."""
    # solve (docs/design.md §5)
    mom2_update_weight: float = 15000.0
    l2: float = 0.0
    use_old_keys: bool = True
    context_key_weight: float = 0.0
    """w: the edit prompts' own other tokens (every token of the bare prompt but the fact
    token) join the regulariser as ``w·Σ k kᵀ``, so the update leaves the MLP output at the
    relation's words ("... mother tongue is") alone: the tokens that prompts about *other*
    subjects share with the edited one. The columns √w·K travel with the delta
    (``held_keys``) and stay in every later batch's regulariser, like the facts' keys.
    0: off, as in the MEMIT/FE/AlphaEdit papers."""
    targets_from: str = "current"
    """Sequential editing: the weights a batch's targets (z, and FE's replayed hidden states)
    are computed on. ``"current"``: the model as edited so far (the papers'); ``"base"``:
    the base model for that step: its exact bits where the state holds them
    (``EditState.base``, kept from a chain's first batch), else the chain's earlier updates
    (``EditState.applied``, which ``EditState.from_deltas`` rebuilds) taken off; the solve
    still runs on the current weights. Over 20 batches of 10 facts, base targets drift
    37 % less (README, "Small batches drift more …"). A first batch is the same either way."""
    # null-space solver only (editing/methods/alphaedit.py), the one place their defaults are
    # written: AlphaEdit's threshold on the eigenvalues of E[k kᵀ] (a mean) and its μ (the
    # reference's L2: keeps U₀ᵀAU₀ + μI invertible when N < rank P); left out of to_dict()
    # at these defaults
    nullspace_threshold: float = 0.02
    nullspace_l2: float = 10.0
    # covariance statistics (docs/design.md §6)
    stats_samples: int = 1000
    stats_seq_len: int = 128
    # context templates (docs/design.md §1)
    template_prefixes: tuple[str, ...] = ("The", "Therefore", "Because", "I", "You")
    template_tokens: int = 10

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("layers must name at least one layer")
        if list(self.layers) != sorted(set(self.layers)):
            raise ValueError(f"layers must be increasing and distinct, got {self.layers}")
        _registry().get_strategy(self.strategy)  # ValueError naming the known ones
        if self.context_key_weight < 0:
            raise ValueError(f"context_key_weight must be >= 0, got {self.context_key_weight}")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.method is not None:
            wanted = _registry().get_method(self.method).strategy.name
            if wanted != self.strategy:
                raise ValueError(f"method {self.method!r} uses strategy {wanted!r}, "
                                 f"not {self.strategy!r}")

    @property
    def method_name(self) -> str:
        """The method these settings run: ``method``, or the strategy's default one."""
        return self.method or _registry().method_for_strategy(self.strategy).name

    @property
    def edited_layers(self) -> tuple[int, ...]:
        """The layers whose weights change (the strategy decides: ``one_layer`` edits the last)."""
        return _registry().get_strategy(self.strategy).edited_layers(self.layers)

    def with_method(self, method: str) -> EditHparams:
        """Same settings, another registered method (``fe``, ``memit``, ``per_layer``, ...)."""
        chosen = _registry().get_method(method)
        return replace(self, strategy=chosen.strategy.name, method=chosen.name)

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
        if d["method"] is None:  # as stored before methods were recorded: the same hashes
            del d["method"]
        for key, default in _OMITTED_AT_DEFAULT.items():  # added later: same hashes as before
            if d[key] == default:
                del d[key]
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


_CHOICES: dict[str, tuple[str, ...]] = {"z_stop": ("nll", "total"), "decay": ("squared", "linear"),
                                        "essence_kl": ("initial_now", "now_initial"),
                                        "targets_from": ("current", "base"),
                                        "name_context": ("sentence", "chat")}

_OMITTED_AT_DEFAULT: dict[str, Any] = {
    f.name: f.default for f in fields(EditHparams)
    if f.name in ("nullspace_threshold", "nullspace_l2", "z_stop", "decay", "essence_kl",
                  "context_key_weight", "targets_from", "name_kl_factor",
                  "chat_prefix", "name_context", "chat_question")
}
"""Fields ``to_dict()`` leaves out while they hold these values: stored hyper-parameters from
before they existed keep their hashes, and ``from_dict`` fills them back in."""
