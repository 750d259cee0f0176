"""Target hidden states: z by gradient descent on a vector, and forward replay of z.

``optimize_z`` finds, for every request at once, an ``offset`` added to the block output of
``layer`` at the fact token such that the model continues the prompt with the new target
(docs/design.md §3). Requests are independent rows of one batch and the loss is their *sum*, so
Adam (elementwise) moves each request's offset exactly as a one-request run would; a request
whose NLL falls below ``nll_stop`` is frozen, as its own early stop would have done.

Causality: tokens before the fact token cannot see ``offset``, so their keys/values are the
same at every step. With ``prefix_cache`` they are computed once and reused from the
model's KV cache; each step then runs only the fact token and what follows it. Likewise the
blocks below ``layer`` cannot see ``offset`` at any token: the first step records their output
and later steps start from it (:func:`editing.forward.hooks.reuse_lower_blocks`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from editing.forward.batch import chunks, pad_right
from editing.forward.hooks import edit_block_output, reuse_lower_blocks
from editing.hparams import EditHparams
from editing.requests import EditRequest
from editing.targets.encoding import FactRow, encode_essence, encode_names, encode_requests
from editing.targets.keys import fact_activations, mean_by_request
from models.placement import input_device, module_device, output_device
from models.specs import block

Progress = Callable[[str, float], None]


@dataclass
class ZResult:
    """The optimised offset per request at one layer, and how the optimisation went."""

    layer: int
    h: torch.Tensor
    """(N, d) block output at ``layer`` at the bare prompt's fact token, before any change."""
    offset: torch.Tensor
    """(N, d) the optimised change; ``z = h + offset``."""
    nll: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    already_predicted: list[bool] = field(default_factory=list)
    tokens_per_step: int = 0
    tokens_per_step_uncached: int = 0
    group_size: int = 0
    """Requests optimised together (0: none computed, all came from the z cache)."""

    @property
    def z(self) -> torch.Tensor:
        return self.h + self.offset


@dataclass
class _Batch:
    """Tensors for the per-step forward pass of one group of requests."""

    ids: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    hook_rows: torch.Tensor
    hook_pos: torch.Tensor
    hook_req: torch.Tensor
    pred_rows: torch.Tensor
    pred_pos: torch.Tensor
    pred_tokens: torch.Tensor
    pred_row_of_token: torch.Tensor
    n_rewrite_rows: int
    prefix_len: int
    cache: object | None
    prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    lower: dict[str, object] = field(default_factory=dict)
    """The output of the block below the z layer, recorded on the first step (it cannot see z)."""


def _reset_to_prefix(cache: object, prefix_kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Put the cached prefix keys/values back (a forward pass appends the suffix's in place)."""
    for layer, (keys, values) in zip(cache.layers, prefix_kv, strict=True):  # type: ignore[attr-defined]
        layer.keys, layer.values = keys, values


def _prepare(
    model: nn.Module, layer: int, rows: list[FactRow], essence: list[FactRow], pad_id: int, prefix_cache: bool
) -> tuple[_Batch, int]:
    """Split each row at its fact token; cache the prefixes' keys/values once.

    Index tensors are made where they are used: ids on the input device, hook positions on
    the z layer's device, prediction positions on the output device (a sharded model has
    all three different).
    """
    device = input_device(model)
    at_layer = module_device(block(model, layer))
    at_output = output_device(model)
    inputs = [r.ids + r.target[:-1] for r in rows] + [r.ids for r in essence]
    all_rows = rows + essence
    split = [r.fact if prefix_cache else 0 for r in all_rows]
    prefixes = [seq[:s] for seq, s in zip(inputs, split, strict=True)]
    suffixes = [seq[s:] for seq, s in zip(inputs, split, strict=True)]
    prefix_len = max(len(p) for p in prefixes)
    ids, suffix_mask = pad_right(suffixes, pad_id, device)
    positions = torch.tensor(split, device=device)[:, None] + torch.arange(ids.shape[1], device=device)
    cache = None
    mask = suffix_mask
    if prefix_len:
        pre_ids, pre_mask = pad_right(prefixes, pad_id, device)
        with torch.no_grad():
            # All-ones mask: pad positions sit after real ones (causal), and a row with an
            # empty prefix would otherwise be fully masked (NaN). The suffix pass masks them.
            cache = model.base_model(input_ids=pre_ids, use_cache=True).past_key_values
        mask = torch.cat([pre_mask, suffix_mask], dim=1)
    pred_rows, pred_pos, pred_tokens, owner = [], [], [], []
    for i, r in enumerate(rows):
        for j, token in enumerate(r.target):
            pred_rows.append(i)
            pred_pos.append(len(r.ids) - 1 + j - split[i])
            pred_tokens.append(token)
            owner.append(i)
    for k, r in enumerate(essence):
        i = len(rows) + k
        # an essence row predicts its next token; a name row (editing.targets.encoding.encode_names)
        # each token of the name's second mention, which ends it
        for j in range(len(r.target)) if r.target else (None,):
            pred_rows.append(i)
            pred_pos.append(len(r.ids) - 1 - split[i] - (len(r.target) - j if r.target else 0))
    uncached = sum(len(s) for s in inputs)

    def t(values: list[int], where: torch.device) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=where)

    batch = _Batch(
        ids=ids, mask=mask, positions=positions,
        hook_rows=t(list(range(len(all_rows))), at_layer),
        hook_pos=t([r.fact - s for r, s in zip(all_rows, split, strict=True)], at_layer),
        hook_req=t([r.request for r in all_rows], at_layer),
        pred_rows=t(pred_rows, at_output), pred_pos=t(pred_pos, at_output),
        pred_tokens=t(pred_tokens, at_output), pred_row_of_token=t(owner, at_output),
        n_rewrite_rows=len(rows), prefix_len=prefix_len, cache=cache,
        prefix_kv=[(layer.keys, layer.values) for layer in cache.layers] if cache is not None else [],
    )
    return batch, uncached


def _log_probs(model: nn.Module, layer: int, batch: _Batch, offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs at the prediction positions with ``offset`` added at the fact tokens.

    Returns ``(log_probs, h)``: h is the block output at the hook positions (before offset),
    in float32. ``offset`` stays float32 (the optimiser's precision); it is cast to the hidden
    state's dtype where it is added, so gradients reach it through the cast.
    """
    seen: dict[str, torch.Tensor] = {}

    def add_offset(hidden: torch.Tensor) -> torch.Tensor:
        seen["h"] = hidden[batch.hook_rows, batch.hook_pos].detach().float()
        shift = offset[batch.hook_req].to(hidden.device, hidden.dtype)
        return hidden.index_put((batch.hook_rows, batch.hook_pos), shift, accumulate=True)

    with edit_block_output(model, layer, add_offset), reuse_lower_blocks(model, layer, batch.lower):
        out = model.base_model(
            input_ids=batch.ids,
            attention_mask=batch.mask,
            position_ids=batch.positions,
            past_key_values=batch.cache,
            use_cache=batch.cache is not None,
        )
    if batch.cache is not None:
        _reset_to_prefix(batch.cache, batch.prefix_kv)
    last = out.last_hidden_state
    hidden = last[batch.pred_rows.to(last.device), batch.pred_pos.to(last.device)]
    logits = model.get_output_embeddings()(hidden).float().to(batch.pred_tokens.device)
    return torch.log_softmax(logits, dim=-1), seen["h"]


def optimize_z(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[EditRequest],
    prefixes: Sequence[str],
    layer: int,
    hp: EditHparams,
    group_size: int = 64,
    prefix_cache: bool = True,
    progress: Progress | None = None,
) -> ZResult:
    """Optimise one offset per request at ``layer`` (batched, in groups of ``group_size``)."""
    parts = [
        _optimize_group(model, tokenizer, list(requests[s]), prefixes, layer, hp, prefix_cache,
                        progress, (s.start, len(requests)))
        for s in chunks(len(requests), group_size)
    ]
    return ZResult(
        layer=layer,
        h=torch.cat([p.h for p in parts]),
        offset=torch.cat([p.offset for p in parts]),
        nll=[x for p in parts for x in p.nll],
        steps=[x for p in parts for x in p.steps],
        already_predicted=[x for p in parts for x in p.already_predicted],
        tokens_per_step=sum(p.tokens_per_step for p in parts),
        tokens_per_step_uncached=sum(p.tokens_per_step_uncached for p in parts),
        group_size=min(group_size, len(requests)),
    )


def _optimize_group(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    requests: list[EditRequest],
    prefixes: Sequence[str],
    layer: int,
    hp: EditHparams,
    prefix_cache: bool,
    progress: Progress | None,
    where: tuple[int, int],
) -> ZResult:
    n, n_prefixes = len(requests), len(prefixes)
    rows = encode_requests(tokenizer, requests, prefixes)
    essence = encode_essence(tokenizer, requests)
    names = encode_names(tokenizer, requests, hp.chat.name_context) if hp.chat.name_kl_factor else []
    name_owner = torch.tensor([r.request for r in names for _ in r.target], dtype=torch.long)
    essence = essence + names
    batch, uncached = _prepare(model, layer, rows, essence, tokenizer.pad_token_id, prefix_cache)
    device = batch.pred_tokens.device  # the loss is computed where the logits are
    hidden_size = model.config.hidden_size
    # float32 whatever the model's dtype: Adam's small steps would vanish in bf16/fp16.
    offset = torch.zeros(n, hidden_size, device=batch.hook_req.device, dtype=torch.float32,
                        requires_grad=True)
    optimizer = torch.optim.Adam([offset], lr=hp.z_lr)
    n_targets = [len(r.target) for r in rows]
    token_row = batch.pred_row_of_token
    n_tokens = len(token_row)
    row_req = torch.tensor([r.request for r in rows], device=device)

    frozen = torch.zeros(n, dtype=torch.bool, device=device)
    steps = [0] * n
    final_nll = torch.zeros(n, device=device)
    h = kl_init = None
    already: list[bool] = []
    for step in range(hp.z_steps):
        log_probs, h_rows = _log_probs(model, layer, batch, offset)
        token_lp = log_probs[:n_tokens].gather(1, batch.pred_tokens[:, None]).squeeze(1)
        row_nll = torch.zeros(len(rows), device=device).index_add(0, token_row, -token_lp)
        row_nll = row_nll / torch.tensor(n_targets, device=device, dtype=row_nll.dtype)
        nll = torch.zeros(n, device=device).index_add(0, row_req, row_nll) / n_prefixes
        essence_lp = log_probs[n_tokens : n_tokens + n]
        name_lp = log_probs[n_tokens + n :]
        if step == 0:
            name_init = name_lp.detach().clone()
            h = h_rows[: batch.n_rewrite_rows : n_prefixes].clone()  # bare prompt = prefix 0
            kl_init = essence_lp.detach().clone()
            hits = log_probs[:n_tokens].argmax(-1) == batch.pred_tokens
            misses = torch.zeros(len(rows), device=device).index_add(0, token_row, (~hits).float())
            already = [bool(misses[i * n_prefixes] == 0) for i in range(n)]
        kl = _kl_from_initial(essence_lp, kl_init)
        name_kl = _name_kl(name_lp, name_init, name_owner.to(device), n)
        decay = hp.weight_decay * _decay_norm(offset, h)
        loss_each = nll + hp.kl_factor * kl + hp.chat.name_kl_factor * name_kl + decay.to(device)

        active = ~frozen
        final_nll = torch.where(active, nll.detach(), final_nll)
        for i in torch.nonzero(active).flatten().tolist():
            steps[i] = step
        frozen = frozen | (nll.detach() < hp.nll_stop)
        if progress:
            progress("z", (where[0] + n * (step + 1) / hp.z_steps) / where[1])
        if bool(frozen.all()) or step == hp.z_steps - 1:
            break
        optimizer.zero_grad()
        loss_each[~frozen].sum().backward()
        keep = offset.detach().clone()
        optimizer.step()
        with torch.no_grad():
            stay = frozen.to(offset.device)
            offset[stay] = keep[stay]
            limit = hp.clamp_norm_factor * h.norm(dim=-1)
            norms = offset.norm(dim=-1)
            scale = torch.where(norms > limit, limit / norms.clamp(min=1e-12), torch.ones_like(norms))
            offset.mul_(scale[:, None])
    assert h is not None
    return ZResult(
        layer=layer, h=h.float(), offset=offset.detach().float(), nll=final_nll.tolist(),
        steps=[s + 1 for s in steps], already_predicted=already,
        tokens_per_step=int(batch.mask[:, batch.prefix_len:].sum()), tokens_per_step_uncached=uncached,
    )


def _kl_from_initial(now: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """Per row, KL(initial ‖ now) from log-probabilities: how far the predictions moved from
    those before the first step, weighted by the initial ones (the FE/MEMIT reference code's
    KL(now ‖ initial) measured the same within noise, docs/results/reproduction.md)."""
    return F.kl_div(now, initial, log_target=True, reduction="none").sum(-1)


def _name_kl(now: torch.Tensor, initial: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """Per request, the mean KL(initial ‖ now) over the positions that predict the subject's
    name where it is written again after a first mention (zeros without name rows)."""
    total = torch.zeros(n, device=owner.device)
    if not len(owner):
        return total
    per_token = _kl_from_initial(now, initial)
    counts = torch.bincount(owner, minlength=n).clamp(min=1)
    return total.index_add(0, owner, per_token) / counts


def _decay_norm(offset: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Per request, ‖δ‖²/‖h‖²: scale-free, unlike the reference code's ‖δ‖/‖h‖², which fades
    as ‖h‖ grows."""
    return offset.pow(2).sum(-1) / h.pow(2).sum(-1)


@torch.no_grad()
def replay_targets(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[EditRequest],
    prefixes: Sequence[str],
    zres: ZResult,
    later_layers: Sequence[int],
    batch_size: int = 64,
) -> dict[int, torch.Tensor]:
    """FE: inject z at ``zres.layer`` and read the block outputs of ``later_layers``.

    With one prefix (the bare prompt) this is the paper's replay; with several, the block
    outputs are averaged per request (``replay_on_templates``).
    """
    if not later_layers:
        return {}
    rows = encode_requests(tokenizer, requests, prefixes, with_target=False)
    device = module_device(block(model, zres.layer))
    offset = zres.offset.to(device)
    outs: list[dict[int, torch.Tensor]] = []
    for part in chunks(len(rows), batch_size):
        chunk = rows[part]
        at = torch.arange(len(chunk), device=device)
        fact = torch.tensor([r.fact for r in chunk], device=device)
        owner = torch.tensor([r.request for r in chunk], device=device)

        def add_offset(hidden: torch.Tensor, at=at, fact=fact, owner=owner) -> torch.Tensor:
            return hidden.index_put((at, fact), offset[owner].to(hidden.dtype), accumulate=True)

        with edit_block_output(model, zres.layer, add_offset):
            _, blocks = fact_activations(model, chunk, tokenizer.pad_token_id, (), later_layers, len(chunk))
        outs.append(blocks)
    return {
        layer: mean_by_request(torch.cat([o[layer] for o in outs]), rows, len(requests))
        for layer in later_layers
    }
