"""Hyper-parameters of one editing run, as typed values (never a path to a JSON file).

:class:`EditHparams` holds the method's settings. The switches that studies added around it
live in typed sub-configurations, each named by what it belongs to: ``chat``
(:class:`ChatTeaching`, teaching the fact in chat form) and ``nullspace`` (:class:`NullSpace`,
the null-space solver's settings). A switch no preset uses and no benchmark needs is removed
with its study (:data:`REMOVED`).

**Input** (:meth:`EditHparams.from_dict`, :meth:`EditHparams.with_overrides`: the CLI's
``--hparam``, ``MODELEDIT_HPARAMS``) takes the public names only: flat method settings, and a
sub-configuration as a nested dict (``{"chat": {"name_kl_factor": 4}}``) or a dotted key
(``chat.name_kl_factor``). A name of an earlier version is a ValueError naming the field
that replaced it (:data:`RETIRED`), or saying that it was removed (:data:`REMOVED`).

**Stored form.** Delta headers, the version store and the z cache keep one flat dict under
the names stored hyper-parameters have always had (:data:`STORED_NAMES`; ``strategy`` derived
from the method; fields added later left out at their defaults). :meth:`EditHparams.to_stored`
writes it and :meth:`EditHparams.from_stored` reads it, of any version: the only place those
names appear, so hashes over the stored form (a delta's content hash, the z cache key) do not
move. A stored form that sets a removed switch to anything but the behaviour kept is refused:
the edit it records can no longer be reproduced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from types import ModuleType
from typing import Any


def _registry() -> ModuleType:
    """The method registry, imported at call time: the built-in methods import the modules
    that take an ``EditHparams``, so a top-level import here would be circular."""
    from editing.methods import registry

    return registry


class NameContext(StrEnum):
    """Where the name term's rows mention the subject first."""

    SENTENCE = "sentence"
    """The bare name before the request's sentence."""
    CHAT = "chat"
    """A user's question naming it in the chat template, the assistant's turn then writing the
    sentence: the context in which edits were measured to break names (docs/results/chat.md)."""


def _enum_fields(obj: Any) -> None:
    """Coerce a frozen dataclass's enum-typed fields given as strings; a ValueError names the
    values allowed."""
    for f in fields(obj):
        kind = f.default.__class__
        if isinstance(f.default, StrEnum) and not isinstance(getattr(obj, f.name), kind):
            value = getattr(obj, f.name)
            try:
                object.__setattr__(obj, f.name, kind(value))
            except ValueError:
                allowed = [e.value for e in kind]
                raise ValueError(f"{f.name} must be one of {allowed}, got {value!r}") from None


@dataclass(frozen=True)
class ChatTeaching:
    """What an edit keeps of the chat form (docs/results/chat.md): a z term that keeps the
    subject's name where the model writes it again after a mention."""

    name_kl_factor: float = 0.0
    """Weight of a z term that keeps the model's predictions of the subject's tokens where the
    name is written again after a mention (``editing.targets.encoding.encode_names``); 0: off."""
    name_context: NameContext = NameContext.SENTENCE

    def __post_init__(self) -> None:
        _enum_fields(self)


@dataclass(frozen=True)
class NullSpace:
    """The null-space solver's settings (``editing/methods/alphaedit.py``)."""

    threshold: float = 0.02
    """Eigenvalues of E[k kᵀ] (a mean) below this span the null space the update is confined to."""
    l2: float = 10.0
    """μ (the reference's L2): keeps U₀ᵀAU₀ + μI invertible when N < rank P."""


SECTIONS: dict[str, type] = {"chat": ChatTeaching, "nullspace": NullSpace}
"""The sub-configurations, by their field in :class:`EditHparams`."""


@dataclass(frozen=True)
class EditHparams:
    """Everything that determines an edit besides the model and the facts."""

    layers: tuple[int, ...]
    """Consecutive edited layers, shallow to deep."""
    method: str | None = None
    """A registered method (``fe``, ``memit``, ``alphaedit``, ...); None: the default one
    (fe), and no ``method`` in the stored form (as stored before methods were recorded)."""
    # z optimisation (docs/design.md §3)
    z_lr: float = 0.5
    """Adam's learning rate for z."""
    z_steps: int = 25
    """At most this many z steps; ``nll_stop`` can end sooner."""
    clamp_norm_factor: float = 0.75
    weight_decay: float = 0.5
    kl_factor: float = 0.0625
    nll_stop: float = 0.05
    replay_on_templates: bool = False
    """FE only: replay h+delta on every templated prompt and average (False: bare prompt, as the paper)."""
    # solve (docs/design.md §5)
    covariance_weight: float = 15000.0
    """λ: how much the key statistics of ordinary text (E[k kᵀ]) weigh against the new facts
    in the least-squares solve; larger moves the model less. The null-space methods do not
    use it."""
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
    37 % less (docs/results/lifelong.md). A first batch is the same either way."""
    # covariance statistics (docs/design.md §6)
    stats_samples: int = 1000
    stats_seq_len: int = 128
    # context templates (docs/design.md §1)
    template_prefixes: tuple[str, ...] = ("The", "Therefore", "Because", "I", "You")
    template_tokens: int = 10
    # sub-configurations
    chat: ChatTeaching = field(default_factory=ChatTeaching)
    nullspace: NullSpace = field(default_factory=NullSpace)

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("layers must name at least one layer")
        if list(self.layers) != sorted(set(self.layers)):
            raise ValueError(f"layers must be increasing and distinct, got {self.layers}")
        if self.method is not None:
            _registry().get_method(self.method)  # ValueError naming the known ones
        if self.context_key_weight < 0:
            raise ValueError(f"context_key_weight must be >= 0, got {self.context_key_weight}")
        if self.targets_from not in ("current", "base"):
            raise ValueError(f"targets_from must be one of ('current', 'base'), got {self.targets_from!r}")
        for name, kind in SECTIONS.items():
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}")

    @property
    def method_name(self) -> str:
        """The method these settings run: ``method``, or the default one (fe)."""
        return self.method or _registry().method_for_strategy("forward_replay").name

    @property
    def strategy_name(self) -> str:
        """The method's target strategy (``forward_replay``, ``memit_targets``, ...)."""
        return _registry().get_method(self.method_name).strategy.name

    @property
    def edited_layers(self) -> tuple[int, ...]:
        """The layers whose weights change (the strategy decides: ``one_layer`` edits the last)."""
        return _registry().get_strategy(self.strategy_name).edited_layers(self.layers)

    def with_method(self, method: str) -> EditHparams:
        """Same settings, another registered method (``fe``, ``memit``, ``per_layer``, ...)."""
        return dataclasses.replace(self, method=_registry().get_method(method).name)

    def replace(self, **changes: Any) -> EditHparams:
        """These settings with ``changes`` (typed values: a sub-configuration as its class)."""
        return dataclasses.replace(self, **changes)

    def with_overrides(self, overrides: Mapping[str, Any]) -> EditHparams:
        """These settings with ``overrides`` (a plain dict: the CLI's ``--hparam``s, or
        ``MODELEDIT_HPARAMS``): public names, a sub-configuration as a nested dict (merged into
        the current one) or dotted keys; unknown or retired names raise ValueError."""
        if not overrides:
            return self
        return EditHparams.from_dict(_merged(self.to_dict(), overrides))

    def to_dict(self) -> dict[str, Any]:
        """The settings under their public names, sub-configurations nested, JSON-ready."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EditHparams:
        """Settings from a plain dict of public names (see :meth:`with_overrides`); unknown
        keys, and the names of earlier versions, raise a ValueError naming the right field."""
        nested = _merged({}, data)
        _check_names(nested)
        kwargs = dict(nested)
        for name, kind in SECTIONS.items():
            if name in kwargs:
                kwargs[name] = kind(**kwargs[name])
        for key in ("layers", "template_prefixes"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def to_stored(self) -> dict[str, Any]:
        """The stored form: flat, under :data:`STORED_NAMES`, ``strategy`` derived from the
        method, ``method`` left out when None and the fields of :data:`OMITTED_AT_DEFAULT`
        at their defaults. Delta headers are written from it and hashes computed over it."""
        out: dict[str, Any] = {"strategy": self.strategy_name}
        for path, value in _flat(self.to_dict()).items():
            name = STORED_NAMES.get(path, path)
            if (name == "method" and value is None) or OMITTED_AT_DEFAULT.get(name, _NONE) == value:
                continue
            out[name] = value
        return out

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> EditHparams:
        """Settings from a stored form of any version (a delta header, a version-store row):
        the inverse of :meth:`to_stored`. A stored ``strategy`` without ``method`` (written
        before methods were recorded) is its default method. A :data:`REMOVED` switch at the
        behaviour kept is dropped; at another value it is a ValueError naming the switch."""
        data = dict(data)
        _drop_removed(data)
        strategy = data.pop("strategy", None)
        method = data.pop("method", None)
        if method is None and strategy not in (None, "forward_replay"):
            method = _registry().method_for_strategy(strategy).name
        public = {_FROM_STORED.get(key, key): value for key, value in data.items()}
        unknown = sorted(k for k in data if k in STORED_NAMES or k in SECTIONS
                         or _FROM_STORED.get(k, k).split(".")[0] not in _PUBLIC)
        if unknown:
            raise ValueError(f"unknown stored hyper-parameters: {unknown}")
        return cls.from_dict({**public, "method": method})


STORED_NAMES: dict[str, str] = {
    "z_lr": "v_lr", "z_steps": "v_steps", "covariance_weight": "mom2_update_weight",
    "chat.name_kl_factor": "name_kl_factor", "chat.name_context": "name_context",
    "nullspace.threshold": "nullspace_threshold", "nullspace.l2": "nullspace_l2",
}
"""Public name (dotted for a sub-configuration's) -> its name in the stored form, where it
differs: the MEMIT paper's names, and the flat names the sub-configurations' fields had."""
_FROM_STORED = {stored: public for public, stored in STORED_NAMES.items()}

OMITTED_AT_DEFAULT: dict[str, Any] = {
    "context_key_weight": 0.0,
    "targets_from": "current", "name_kl_factor": 0.0,
    "name_context": "sentence",
    "nullspace_threshold": 0.02, "nullspace_l2": 10.0,
}
"""Stored names of the fields added after the first stored hyper-parameters, left out of the
stored form at these values: stored hyper-parameters from before they existed keep their
hashes, and :meth:`EditHparams.from_stored` fills them back in."""
_NONE = object()

RETIRED: dict[str, str] = {
    "mom2_update_weight": "covariance_weight", "v_lr": "z_lr", "v_steps": "z_steps",
    "strategy": "method", "nullspace_threshold": "nullspace.threshold", "nullspace_l2": "nullspace.l2",
    "name_kl_factor": "chat.name_kl_factor", "name_context": "chat.name_context",
}
"""Names earlier versions accepted as input -> the field that replaced them (error messages
only; no input takes them)."""


@dataclass(frozen=True)
class RemovedSwitch:
    """A research switch removed because no shipped preset used it and no benchmark needed
    it: only its default behaviour remains."""

    stored: str
    """Its name in the stored form (and the flat input name it had before sub-configurations)."""
    kept: Any
    """The stored value of the behaviour that remains."""
    behaviour: str
    """What every edit now does, for error messages."""
    removed_on: str


REMOVED: dict[str, RemovedSwitch] = {
    "z.stop": RemovedSwitch("z_stop", "nll", "a request's z stops when its NLL falls below nll_stop",
                            "2026-12-07"),
    "z.decay": RemovedSwitch("decay", "squared", "z's weight decay is ||offset||^2/||h||^2", "2026-12-07"),
    "z.essence_kl": RemovedSwitch("essence_kl", "initial_now",
                                  "the essence prompt's KL term is KL(initial || now)", "2026-12-07"),
}
"""The removed switches, by the public name they last had: the FE/MEMIT reference code's z
rules, each measured within noise of ours (docs/results/reproduction.md). Their stored names
were only ever written at other values (:data:`OMITTED_AT_DEFAULT` left them out), so no
digest changes; :meth:`EditHparams.from_stored` refuses a stored form that used one."""
_REMOVED_BY_NAME = {name: (public, switch) for public, switch in REMOVED.items()
                    for name in (public, switch.stored)}
_REMOVED_SECTION = "z"
"""The sub-configuration that held only removed switches."""
_PUBLIC = {f.name for f in fields(EditHparams)}


def retired_name_error(name: str) -> str | None:
    """The message for a name of an earlier version, replaced or removed (None if ``name`` is
    not one)."""
    new = RETIRED.get(name)
    if new is not None:
        return f"{name!r} is no longer accepted: use {new!r}"
    if name == _REMOVED_SECTION:
        return f"{name!r} is no longer accepted: its switches ({', '.join(REMOVED)}) were removed; leave it out"
    if name in _REMOVED_BY_NAME:
        public, switch = _REMOVED_BY_NAME[name]
        return (f"{name!r} is no longer accepted: {public} was removed on {switch.removed_on} "
                f"({switch.behaviour}, always); leave it out")
    return None


def _drop_removed(stored: dict[str, Any]) -> None:
    """Take the :data:`REMOVED` switches out of a stored form: silently at the behaviour kept,
    else a ValueError, since the edit that form records cannot be reproduced."""
    used = []
    for public, switch in REMOVED.items():
        value = stored.pop(switch.stored, switch.kept)
        if value != switch.kept:
            used.append(f"{switch.stored}={value!r} ({public}, removed on {switch.removed_on}; "
                        f"every edit now: {switch.behaviour})")
    if used:
        raise ValueError("stored hyper-parameters use removed switches, so this edit cannot be "
                         "reproduced: " + "; ".join(used))


def _check_names(nested: Mapping[str, Any]) -> None:
    problems = []
    for key, value in nested.items():
        if key in SECTIONS and isinstance(value, Mapping):
            known = {f.name for f in fields(SECTIONS[key])}
            problems += [f"unknown setting {key}.{name}" for name in value if name not in known]
        elif key not in _PUBLIC:
            problems.append(retired_name_error(key) or f"unknown hyper-parameter {key!r}")
    if problems:
        raise ValueError("; ".join(problems) + f" (known: {sorted(_PUBLIC)})")


def _merged(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` (nested) with ``overrides`` (nested dicts or dotted keys) merged in."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for key, value in overrides.items():
        section, dot, name = key.partition(".")
        if dot and section in SECTIONS:
            out.setdefault(section, {})[name] = value
        elif key in SECTIONS and isinstance(value, Mapping):
            out[key] = {**out.get(key, {}), **value}
        else:
            out[key] = value
    return out


def _plain(value: Any) -> Any:
    """JSON-ready: enums as their values, tuples as lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    return value


def _flat(nested: Mapping[str, Any]) -> dict[str, Any]:
    """The sub-configurations' fields under dotted names."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        if key in SECTIONS:
            out |= {f"{key}.{name}": v for name, v in value.items()}
        else:
            out[key] = value
    return out
