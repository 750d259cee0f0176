"""Hyper-parameters of one editing run, as a typed value (never a path to a JSON file).

The method is a name in :data:`editing.methods.registry.METHODS`. ``strategy`` is the method's
target strategy: given on its own it is a deprecated alias of its default method (accepted
for one release), because hyper-parameters stored before methods were recorded name only it.

**Names.** The public names say what a setting does: ``covariance_weight`` (λ, the MEMIT
paper's ``mom2_update_weight``), ``z_lr`` and ``z_steps`` (the z step settings, the papers'
``v_lr``/``v_steps``). The papers' names stay accepted as aliases for one release wherever
settings come in (:meth:`EditHparams.from_dict`, :meth:`EditHparams.with_overrides`, the
constructor); giving both names with different values is a ValueError naming both.

**Stored form.** Delta headers, the version store and the z cache keep the papers' names
(:meth:`EditHparams.stored_dict`): delta files are content-addressed and never rewritten, and
a hash over the same settings must stay the same. :func:`public_names` translates a stored
dict when it is read.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from types import ModuleType
from typing import Any

ALIASES: dict[str, str] = {"mom2_update_weight": "covariance_weight", "v_lr": "z_lr",
                           "v_steps": "z_steps"}
"""The papers' names -> the public ones. The papers' names are the stored form (delta headers,
the version store, the z cache) and accepted input aliases for one release."""
STORED_NAMES: dict[str, str] = {new: old for old, new in ALIASES.items()}
"""The public names -> the names stored hyper-parameters have always used."""


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
    strategy: str | None = None
    """The method's target strategy, filled in from ``method`` when not given. Given without
    ``method`` it is a **deprecated alias** of its default method (``forward_replay`` -> fe),
    as hyper-parameters stored before methods were recorded have it; None and no ``method``:
    ``forward_replay``."""
    method: str | None = None
    """A registered method (``fe``, ``memit``, ``alphaedit``, ...); None: the default method of
    ``strategy`` (fe). Left out of the stored form when None, so older hashes stay."""
    # z optimisation (docs/design.md §3)
    z_lr: float = 0.5
    """Adam's learning rate for z (the papers' ``v_lr``)."""
    z_steps: int = 25
    """At most this many z steps (the papers' ``v_steps``); ``nll_stop`` can end sooner."""
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
    (``editing.targets.templates.chat_prefix``): z and the keys then see the fact in a chat turn."""
    name_kl_factor: float = 0.0
    """Weight of a z term that keeps the model's predictions of the subject's tokens where the
    name is written again after a mention (``editing.targets.encoding.encode_names``); 0: off."""
    name_context: str = "sentence"
    """Where the name term's rows mention the subject first: ``"sentence"``, the bare name
    before the request's sentence; ``"chat"``, a user's question naming it in the chat
    template, the assistant's turn then writing the sentence: the context in which the edit
    was measured to break names (docs/results/chat.md), with a question of its own;
    ``"question"``, the request's own ``question`` there (its sentence when it has none): the
    context the evaluation checks names in, so for requests that carry what users will ask."""
    chat_question: bool = False
    """Add, per request, the chat template with the request's ``question`` (its cloze sentence
    when it has none) as the user's message and the cloze prompt as the assistant's start
    (``editing.targets.templates.question_prefix``) to the context prefixes: z and the keys then see
    the fact where a user asks it."""
    chat_answer: bool = False
    """Add, per request, its chat turn answered at once: the request's ``question`` (its cloze
    sentence when it has none or the question does not name the subject) as the user's message and
    ``target_new`` as the assistant's first tokens, the fact token in the user's message
    (``editing.targets.templates.answer_turn``): the form in which chat efficacy asks the fact."""
    replay_on_templates: bool = False
    """FE only: replay h+delta on every templated prompt and average (False: bare prompt, as the paper)."""
    # solve (docs/design.md §5)
    covariance_weight: float = 15000.0
    """λ: how much the key statistics of ordinary text (E[k kᵀ]) weigh against the new facts
    in the least-squares solve; larger moves the model less (the papers'
    ``mom2_update_weight``). The null-space methods do not use it."""
    l2: float = 0.0
    """μ of the least-squares solve: a ridge term μI."""
    use_old_keys: bool = True
    """Keep earlier batches' keys (Σ K Kᵀ) in the regulariser of later ones."""
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
    # null-space solver only (editing/methods/alphaedit.py reads them through its
    # NullSpaceConfig); left out of to_dict() at these defaults
    nullspace_threshold: float = 0.02
    """AlphaEdit's threshold on the eigenvalues of E[k kᵀ] (a mean): smaller ones span the
    null space the update is confined to."""
    nullspace_l2: float = 10.0
    """AlphaEdit's μ (the reference's L2): keeps U₀ᵀAU₀ + μI invertible when N < rank P."""
    # covariance statistics (docs/design.md §6)
    stats_samples: int = 1000
    stats_seq_len: int = 128
    # context templates (docs/design.md §1)
    template_prefixes: tuple[str, ...] = ("The", "Therefore", "Because", "I", "You")
    template_tokens: int = 10

    def __post_init__(self) -> None:
        if self.strategy is None:  # derived from the method; the default method's otherwise
            strategy = (_registry().get_method(self.method).strategy.name
                        if self.method is not None else "forward_replay")
            object.__setattr__(self, "strategy", strategy)
        if not self.layers:
            raise ValueError("layers must name at least one layer")
        if list(self.layers) != sorted(set(self.layers)):
            raise ValueError(f"layers must be increasing and distinct, got {self.layers}")
        _registry().get_strategy(self.strategy_name)  # ValueError naming the known ones
        if self.context_key_weight < 0:
            raise ValueError(f"context_key_weight must be >= 0, got {self.context_key_weight}")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.method is not None:
            wanted = _registry().get_method(self.method).strategy.name
            if wanted != self.strategy:
                raise ValueError(f"method {self.method!r} uses strategy {wanted!r}, "
                                 f"not {self.strategy!r}; give only method (strategy is its "
                                 "deprecated alias)")

    @property
    def strategy_name(self) -> str:
        """The target strategy (never None after construction; typed for readers)."""
        assert self.strategy is not None  # set by __post_init__
        return self.strategy

    @property
    def method_name(self) -> str:
        """The method these settings run: ``method``, or the strategy's default one."""
        return self.method or _registry().method_for_strategy(self.strategy_name).name

    @property
    def edited_layers(self) -> tuple[int, ...]:
        """The layers whose weights change (the strategy decides: ``one_layer`` edits the last)."""
        return _registry().get_strategy(self.strategy_name).edited_layers(self.layers)

    # the papers' names, readable for one release
    @property
    def z_reads_question(self) -> bool:
        """Whether z depends on each request's ``question`` (a row renders it), so that the
        question must key the z cache."""
        return self.chat_question or self.chat_answer or bool(self.name_kl_factor and self.name_context == "question")

    @property
    def mom2_update_weight(self) -> float:
        """Deprecated: :attr:`covariance_weight`."""
        _deprecated("mom2_update_weight")
        return self.covariance_weight

    @property
    def v_lr(self) -> float:
        """Deprecated: :attr:`z_lr`."""
        _deprecated("v_lr")
        return self.z_lr

    @property
    def v_steps(self) -> int:
        """Deprecated: :attr:`z_steps`."""
        _deprecated("v_steps")
        return self.z_steps

    def with_method(self, method: str) -> EditHparams:
        """Same settings, another registered method (``fe``, ``memit``, ``per_layer``, ...)."""
        chosen = _registry().get_method(method)
        return replace(self, strategy=chosen.strategy.name, method=chosen.name)

    def replace(self, **changes: Any) -> EditHparams:
        """These settings with ``changes`` (the papers' names accepted); a new ``method``
        brings its own strategy."""
        changes = public_names(changes)
        if "method" in changes and "strategy" not in changes:
            changes["strategy"] = None
        return replace(self, **changes)

    def with_overrides(self, overrides: Mapping[str, Any]) -> EditHparams:
        """These settings with ``overrides`` (a plain dict: the CLI's ``--hparam``s, or
        ``MODELEDIT_HPARAMS``); unknown keys raise ValueError, lists become tuples, the
        papers' names are accepted, and a ``method`` brings its own strategy."""
        if not overrides:
            return self
        overrides = public_names(overrides)
        base = self.to_dict()
        if "method" in overrides and "strategy" not in overrides:
            base.pop("strategy")
        return EditHparams.from_dict({**base, **overrides})

    def stored_dict(self) -> dict[str, Any]:
        """The canonical stored form: :meth:`to_dict` under the names stored hyper-parameters
        have always had (``mom2_update_weight``, ``v_lr``, ``v_steps``). Delta headers are
        written from it, and hashes (the delta's content hash, the z cache key) are computed
        over it, so they do not change with the public names."""
        return {STORED_NAMES.get(key, key): value for key, value in self.to_dict().items()}

    def to_dict(self) -> dict[str, Any]:
        """The settings under their public names; fields added after the first stored
        hyper-parameters are left out at their defaults, and ``method`` when None."""
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
    def from_dict(cls, data: Mapping[str, Any]) -> EditHparams:
        """Settings from a plain dict: the public names, or the stored form's (a delta
        header, a version-store row, an older bench JSON)."""
        data = public_names(data)
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown hyper-parameters: {sorted(unknown)}")
        for key in ("layers", "template_prefixes"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def public_names(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with the papers' names (``mom2_update_weight``, ``v_lr``, ``v_steps``) under
    the public ones; a ValueError naming both when a setting is given twice with different
    values. How every stored dict of hyper-parameters is read (it is never rewritten)."""
    out = dict(data)
    for old, new in ALIASES.items():
        if old not in out:
            continue
        value = out.pop(old)
        if new in out and out[new] != value:
            raise ValueError(f"{new}={out[new]!r} and {old}={value!r} disagree: {old} is the "
                             f"older name of {new}; give only {new}")
        out[new] = value
    return out


def _deprecated(old: str) -> None:
    warnings.warn(f"{old} is deprecated; use {ALIASES[old]}", DeprecationWarning, stacklevel=3)


def _accept_aliases(init: Any) -> Any:
    """The dataclass's ``__init__`` taking the papers' names too (with a DeprecationWarning),
    so ``EditHparams(v_lr=0.1)`` and ``dataclasses.replace`` keep working for one release."""

    @functools.wraps(init)
    def __init__(self: EditHparams, *args: Any, **kwargs: Any) -> None:
        old = sorted(set(kwargs) & set(ALIASES))
        if old:
            warnings.warn(f"{', '.join(old)}: deprecated names; use "
                          f"{', '.join(ALIASES[name] for name in old)}", DeprecationWarning,
                          stacklevel=2)
            kwargs = public_names(kwargs)
        init(self, *args, **kwargs)

    return __init__


EditHparams.__init__ = _accept_aliases(EditHparams.__init__)  # type: ignore[method-assign]


_CHOICES: dict[str, tuple[str, ...]] = {"z_stop": ("nll", "total"), "decay": ("squared", "linear"),
                                        "essence_kl": ("initial_now", "now_initial"),
                                        "targets_from": ("current", "base"),
                                        "name_context": ("sentence", "chat", "question")}

_OMITTED_AT_DEFAULT: dict[str, Any] = {
    f.name: f.default for f in fields(EditHparams)
    if f.name in ("nullspace_threshold", "nullspace_l2", "z_stop", "decay", "essence_kl",
                  "context_key_weight", "targets_from", "name_kl_factor",
                  "chat_prefix", "name_context", "chat_question", "chat_answer")
}
"""Fields ``to_dict()`` leaves out while they hold these values: stored hyper-parameters from
before they existed keep their hashes, and ``from_dict`` fills them back in."""
