"""The edit pipeline: plan → targets → per-layer solve → delta.

The method (:mod:`editing.methods`) supplies the two parts that differ between methods: its
strategy gives the targets and each layer's residual, its solver the layer's update. The rest
(statistics, keys, the layer loop, diagnostics) is the same for all of them.

Layers are solved shallow to deep, each on the model as edited so far, because an update at
one layer changes the keys and hidden states of every later one. The model's weights are
restored before ``edit`` returns: the result is a :class:`WeightDelta` the caller applies.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from editing.forward.memory import z_group_for
from editing.hparams import EditHparams
from editing.methods import get_method
from editing.presets import preset_for
from editing.requests import EditRequest, validate_requests
from editing.solve.stats import Corpus, CovarianceCache
from editing.state import EditState
from editing.targets.encoding import encode_requests
from editing.targets.keys import fact_activations, layer_keys, mean_by_request
from editing.targets.templates import context_prefixes
from editing.targets.z import ZResult, optimize_z
from editing.targets.zcache import ZCache
from editing.weights.delta import (
    BaseWeights,
    LayerUpdate,
    WeightDelta,
    add_layer_update,
    model_dtype,
    resident_weight,
)
from editing.weights.fingerprint import model_fingerprint
from editing.weights.precision import landed_error
from models.placement import module_device
from models.specs import block, weight_out_in

Progress = Callable[[str, float], None]


@dataclass
class EditResult:
    delta: WeightDelta
    state: EditState
    diagnostics: dict[str, Any]


@dataclass
class EditorCaches:
    """What an editor keeps between calls, shared by every method and every call's hparams.

    Key statistics are the costliest (float64 d_k×d_k per layer, 7.7 GiB for Llama-3-8B):
    they depend only on the model, the corpus and the statistics settings, never on the
    method, so there is one cache per statistics setting, not one per method. Context
    prefixes are generated once per template setting; the z cache is optional.
    """

    cache_dir: Path | None = None
    corpus: Corpus | None = None
    z_cache: ZCache | None = None
    _stats: dict[tuple[int, int], CovarianceCache] = field(default_factory=dict, repr=False)
    _prefixes: dict[tuple[int, int], list[str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.cache_dir = Path(self.cache_dir) if self.cache_dir else None

    def stats_for(self, hparams: EditHparams) -> CovarianceCache:
        """The statistics cache for ``hparams``' sample count and sequence length."""
        key = (hparams.stats_samples, hparams.stats_seq_len)
        if key not in self._stats:
            self._stats[key] = CovarianceCache(self.cache_dir, self.corpus, *key)
        return self._stats[key]

    def prefixes_for(self, hparams: EditHparams, make: Callable[[], list[str]]) -> list[str]:
        """The context prefixes of ``hparams``' template setting, made once by ``make``."""
        key = (hparams.template_prefixes, hparams.template_tokens)
        if key not in self._prefixes:
            self._prefixes[key] = make()
        return self._prefixes[key]


class Editor:
    """Computes weight deltas for batches of edit requests on one model.

    ``Editor(model, tokenizer, caches)`` and ``edit(requests, hparams=..., state=...)``: the
    method and its settings are chosen per call, so one editor (and one statistics cache)
    serves every method and every per-request strength. The hparams given at construction
    (or the model's preset) are the default for calls that name none; ``cache_dir``,
    ``corpus`` and ``z_cache`` build the caches when ``caches`` is not given.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        caches: EditorCaches | None = None,
        *,
        hparams: EditHparams | None = None,
        model_name: str = "",
        cache_dir: Path | str | None = None,
        corpus: Corpus | None = None,
        z_group_size: int | None = None,
        prefix_cache: bool = True,
        batch_size: int = 64,
        z_cache: ZCache | None = None,
    ) -> None:
        if caches is None:
            caches = EditorCaches(Path(cache_dir) if cache_dir else None, corpus, z_cache)
        if hparams is None:
            hparams = preset_for(model_name, model)
        self.model = model
        self.tokenizer = tokenizer
        self.caches = caches
        self.hparams = hparams
        self.method = get_method(hparams.method_name)
        self.model_name = model_name
        self.z_group_size = z_group_size
        self.prefix_cache = prefix_cache
        self.batch_size = batch_size
        self.fingerprint = model_fingerprint(model)

    @property
    def cache_dir(self) -> Path | None:
        return self.caches.cache_dir

    @property
    def z_cache(self) -> ZCache | None:
        return self.caches.z_cache

    @z_cache.setter
    def z_cache(self, value: ZCache | None) -> None:
        self.caches.z_cache = value

    @property
    def stats(self) -> CovarianceCache:
        return self.caches.stats_for(self.hparams)

    def with_hparams(self, hparams: EditHparams) -> Editor:
        """This editor computing with ``hparams``: the same model, tokenizer and caches, and
        nothing of this one changes (a per-request strength cannot leak into the next job)."""
        bound = copy.copy(self)
        bound.hparams = hparams
        bound.method = get_method(hparams.method_name)
        return bound

    def prefixes(self) -> list[str]:
        """Context prefixes (generated once per model and template setting; ``""`` first)."""
        hp = self.hparams
        return list(self.caches.prefixes_for(hp, lambda: context_prefixes(
            self.model, self.tokenizer, hp.template_prefixes, hp.template_tokens,
            self.fingerprint, self.cache_dir,
        )))

    def covariances(self, progress: Progress | None = None) -> dict[int, torch.Tensor]:
        report = (lambda f: progress("stats", f)) if progress else None
        return self.stats.get(self.model, self.tokenizer, self.hparams.edited_layers, self.fingerprint, report)

    # -- targets ---------------------------------------------------------------------------
    def z_at(self, requests: Sequence[EditRequest], layer: int, progress: Progress | None = None) -> ZResult:
        """Optimise z at ``layer``; with a z cache, only for requests not computed before."""
        if self.z_cache is None:
            return self._optimize(requests, layer, progress)
        prefixes = self.prefixes()
        shared = self.z_cache.context_key(self.model, self.fingerprint, layer, self.hparams, prefixes)
        contexts = [shared] * len(requests)
        hits = [self.z_cache.get(c, r) for c, r in zip(contexts, requests, strict=True)]
        missing = [i for i, hit in enumerate(hits) if hit is None]
        steps, already = [0] * len(requests), [False] * len(requests)
        tokens = uncached = group = 0
        if missing:
            fresh = self._optimize([requests[i] for i in missing], layer, progress)
            tokens, uncached, group = fresh.tokens_per_step, fresh.tokens_per_step_uncached, fresh.group_size
            for j, i in enumerate(missing):
                self.z_cache.put(contexts[i], requests[i], fresh.h[j], fresh.offset[j], fresh.nll[j])
                hits[i] = (fresh.h[j], fresh.offset[j], fresh.nll[j])
                steps[i], already[i] = fresh.steps[j], fresh.already_predicted[j]
        rows = [hit for hit in hits if hit is not None]
        device = module_device(block(self.model, layer))
        return ZResult(
            layer=layer,
            h=torch.stack([h for h, _, _ in rows]).to(device),
            offset=torch.stack([d for _, d, _ in rows]).to(device),
            nll=[nll for _, _, nll in rows],
            steps=steps,
            already_predicted=already,
            tokens_per_step=tokens,
            tokens_per_step_uncached=uncached,
            group_size=group,
        )

    def _optimize(self, requests: Sequence[EditRequest], layer: int, progress: Progress | None) -> ZResult:
        prefixes = self.prefixes()
        group = self.z_group_size or z_group_for(self.model, self.hparams.edited_layers, layer, len(prefixes))
        return optimize_z(
            self.model, self.tokenizer, requests, prefixes, layer, self.hparams,
            group_size=group, prefix_cache=self.prefix_cache, progress=progress,
        )

    def targets(
        self, requests: Sequence[EditRequest], progress: Progress | None = None
    ) -> tuple[dict[int, torch.Tensor], list[ZResult]]:
        """Absolute target hidden states (N, d) per layer, by the method's strategy."""
        return self.method.strategy.targets(self, requests, progress)

    # -- the edit ----------------------------------------------------------------------------
    def edit(
        self,
        requests: Sequence[EditRequest],
        state: EditState | None = None,
        progress: Progress | None = None,
        *,
        hparams: EditHparams | None = None,
    ) -> EditResult:
        """Compute the delta for one batch on the model's current weights.

        ``hparams``: the method and settings of this call (default: the editor's). ``state``
        holds earlier batches' keys (sequential editing); the returned state adds this
        batch's. The model's weights are the same before and after the call.
        """
        if hparams is not None and hparams is not self.hparams:
            return self.with_hparams(hparams).edit(requests, state, progress)
        requests = validate_requests(requests)
        hp = self.hparams
        for layer in hp.edited_layers:  # before any compute: an offloaded layer cannot change
            resident_weight(self.model, layer)
        if self.z_group_size is None:  # before any compute: refuse a fact that cannot fit
            z_group_for(self.model, hp.edited_layers, hp.edited_layers[0], len(self.prefixes()))
        state = state or EditState()
        timings: dict[str, float] = {}
        started = time.perf_counter()
        prefixes = self.prefixes()
        timings["templates_s"] = time.perf_counter() - started
        mark = time.perf_counter()
        covs = self.covariances(progress)
        timings["stats_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        with self._weights_for_targets(state):
            targets, zresults = self.targets(requests, progress)
        timings["targets_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        updates, keys, held, diag = self._solve_layers(requests, prefixes, targets, covs, state, progress)
        timings["solve_s"] = time.perf_counter() - mark
        timings["total_s"] = time.perf_counter() - started
        delta = WeightDelta(
            updates=updates,
            model_name=self.model_name,
            model_type=self.model.config.model_type,
            base_fingerprint=self.fingerprint,
            hparams=hp.to_stored(),  # the stored form: the content hash stays
            info={"method": self.method.name, "strategy": hp.strategy_name, "n_requests": len(requests), "prior_facts": state.n_facts},
            keys=keys,
            held_keys=held,
            base_dtype=model_dtype(self.model),
        )
        z_main = zresults[0]
        diagnostics = {
            **diag,
            "method": self.method.name,
            "strategy": hp.strategy_name,
            "z_layer": [z.layer for z in zresults],
            "z_loss": z_main.nll,
            "z_steps": z_main.steps,
            "already_predicted": [i for i, hit in enumerate(z_main.already_predicted) if hit],
            "z_tokens_per_step": z_main.tokens_per_step,
            "z_tokens_per_step_uncached": z_main.tokens_per_step_uncached,
            "z_group_size": z_main.group_size,
            "timings": timings,
        }
        next_state = state.extended(keys, held, updates, base=self._base_for_chain(state))
        return EditResult(delta=delta, state=next_state, diagnostics=diagnostics)

    def _base_for_chain(self, state: EditState) -> BaseWeights | None:
        """With ``targets_from="base"``, exact copies (on the CPU) of the edited matrices the
        chain has not changed yet, so later batches see the base bit for bit."""
        layers = self.hparams.edited_layers
        if self.hparams.targets_from != "base" or state.has_base_for(layers):
            return state.base
        untouched = [layer for layer in layers if layer not in state.applied]
        kept = BaseWeights(dict(state.base.tensors) if state.base else {})
        return kept.keep(self.model, untouched, device="cpu")

    @contextmanager
    def _weights_for_targets(self, state: EditState) -> Iterator[None]:
        """The weights the targets are computed on: the model as it is, or with
        ``targets_from="base"`` the base's (then the chain's weights are put back bit for bit).

        Why: a batch's z optimised on the model as edited so far builds on every earlier
        edit's side effects, and a long chain of such targets drifts faster than the same
        facts edited at once; targets from the base are what one large batch would use.
        The base is the state's exact copy where it has one (the z cache then finds z computed
        on the base), else the chain's updates are taken off (the base to float32 rounding).
        """
        if self.hparams.targets_from != "base" or not state.applied:
            yield
            return
        snapshot = BaseWeights.snapshot(self.model, state.applied)
        try:
            if state.has_base_for(state.applied):
                BaseWeights({layer: state.base.tensors[layer] for layer in state.applied}).restore(self.model)
            else:
                for layer, parts in state.applied.items():
                    add_layer_update(self.model, layer, LayerUpdate(-LayerUpdate.summed(parts).dense()))
            yield
        finally:
            snapshot.restore(self.model)

    def _solve_layers(
        self,
        requests: Sequence[EditRequest],
        prefixes: list[str],
        targets: dict[int, torch.Tensor],
        covs: dict[int, torch.Tensor],
        state: EditState,
        progress: Progress | None,
    ) -> tuple[dict[int, LayerUpdate], dict[int, torch.Tensor], dict[int, torch.Tensor], dict[str, Any]]:
        """Per-layer updates, this batch's keys and held columns (for later batches), diagnostics."""
        hp = self.hparams
        layers = hp.edited_layers
        last = layers[-1]
        n = len(requests)
        rows = encode_requests(self.tokenizer, requests, prefixes, with_target=False)
        bare = rows[:: len(prefixes)]
        pad = self.tokenizer.pad_token_id
        strategy, solver = self.method.strategy, self.method.solver
        h_rows = rows if strategy.h_on_templates(hp) else bare
        config = solver.config(hp)  # the solver's typed settings, read once per call
        # the bare prompts (prefix "" first): their other tokens are held with w > 0
        context_rows = range(0, len(rows), len(prefixes)) if hp.context_key_weight else ()

        def h_now(layer_list: Sequence[int]) -> dict[int, torch.Tensor]:
            _, blocks = fact_activations(self.model, h_rows, pad, (), layer_list, self.batch_size)
            return {layer: mean_by_request(v, h_rows, n) for layer, v in blocks.items()}

        updates: dict[int, LayerUpdate] = {}
        batch_keys: dict[int, torch.Tensor] = {}
        batch_held: dict[int, torch.Tensor] = {}
        ratios: list[float] = []
        residual_norms: list[float] = []
        rounding_errors: list[float] = []
        initial: torch.Tensor | None = None
        snapshot = BaseWeights.snapshot(self.model, layers)
        try:
            for i, layer in enumerate(layers):
                fact_keys, other_keys = layer_keys(self.model, rows, pad, layer, context_rows, self.batch_size)
                k = mean_by_request(fact_keys, rows, n)
                now = h_now(sorted({layer, last}))
                gap = (targets[last] - now[last]).norm(dim=-1)
                initial = gap if initial is None else initial
                ratios.append(float((gap / initial.clamp(min=1e-12)).mean()))
                residual = strategy.residual(targets, now, i, layers)
                residual_norms.append(float(residual.norm(dim=-1).mean()))
                old = state.old_kkT(layer, k.device) if hp.use_old_keys else None
                if hp.context_key_weight:  # added in place: one d_k × d_k float64 matrix, like C_old
                    held = hp.context_key_weight ** 0.5 * other_keys.double().T
                    old = held @ held.T if old is None else old.addmm_(held, held.T)
                    batch_held[layer] = held.float().cpu()
                left, right = solver.solve(k.T, residual.T, covs[layer].to(k.device), old, config)
                updates[layer] = LayerUpdate.from_factors(left, right)
                batch_keys[layer] = k.T.detach().cpu()
                before = weight_out_in(self.model, layer).detach().clone()
                add_layer_update(self.model, layer, updates[layer])
                rounding_errors.append(
                    landed_error(before, weight_out_in(self.model, layer), updates[layer].dense()))
                if progress:
                    progress("solve", (i + 1) / len(layers))
            gap = (targets[last] - h_now((last,))[last]).norm(dim=-1)
            ratios.append(float((gap / initial.clamp(min=1e-12)).mean()))
        finally:
            snapshot.restore(self.model)
        diag = {
            "layers": list(layers),
            "residual_ratio": ratios,
            "residual_norm": residual_norms,
            "update_norm": [updates[layer].norm() for layer in layers],
            # ‖stored change − update‖ / ‖update‖ per layer: ~1e-7 in float32, and in a
            # half-precision model too, whose edited matrices are held in float32
            "update_rounding_error": rounding_errors,
            "base_dtype": model_dtype(self.model),
        }
        return updates, batch_keys, batch_held, diag
