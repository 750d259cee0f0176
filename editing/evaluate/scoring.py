"""Batched teacher-forced scoring: many ``prompt + " " + target`` rows per forward pass.

Every metric needs the same few things per row (the target's log-probabilities and argmax
tokens, or the next-token distribution after a bare prompt), so evaluation is phrased as a set
of :class:`ScoreRow` s scored in padded batches (right padding, as our tokenizers are set), sorted
by length so little compute goes to padding. Rows are deduplicated, and rows whose inputs
are prefixes of another row's share its forward pass (see :func:`score_rows`).

The unedited side of a comparison is the *same* model with the delta reverted
(:func:`with_delta`), never a second copy in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from editing.evaluate.metrics import target_argmax, target_logprobs
from editing.forward.batch import pad_id, pad_right
from editing.forward.tokens import continuation_ids, prompt_ids
from editing.weights.delta import WeightDelta
from models.placement import input_device


@dataclass(frozen=True)
class ScoreRow:
    """A prompt teacher-forced on ``sep + target``, or (``target=None``) a bare prompt whose
    next-token distribution is wanted."""

    prompt: str
    target: str | None = None
    sep: str = " "
    """What joins prompt and target: a space, or nothing where a chat turn opens."""


@dataclass
class RowScore:
    """What one row's forward pass gives the metrics (all on CPU)."""

    target_ids: torch.Tensor
    """Ids of ``" " + target`` after the prompt (empty for a next-token row)."""
    logprobs: torch.Tensor
    """Log-probability of each target token, teacher forced."""
    argmax: torch.Tensor
    """The model's argmax token at each target position."""
    next_logprobs: torch.Tensor | None = None
    """Next-token log-probabilities after the prompt (rows asked for with ``next_for``)."""


def encode_row(tokenizer: PreTrainedTokenizerBase, row: ScoreRow) -> tuple[list[int], list[int]]:
    """Prompt ids and target ids by the project's shared rules (``editing.forward.tokens``)."""
    head = prompt_ids(tokenizer, row.prompt)
    if not head:
        raise ValueError(f"prompt {row.prompt!r} encodes to no tokens")
    tail = (continuation_ids(tokenizer, row.prompt, row.target, row.sep)
            if row.target is not None else [])
    return head, tail


@torch.inference_mode()
def score_rows(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    rows: Iterable[ScoreRow],
    batch_size: int = 32,
    next_for: Collection[ScoreRow] = (),
) -> dict[ScoreRow, RowScore]:
    """Score distinct rows with ``batch_size`` sequences per padded forward pass.

    A row needs the model's logits from its prompt's last token up to its target's
    second-to-last token: the last target token is never an input. So the forward runs on
    ``prompt + target[:-1]``, and a row whose input is a prefix of another's (``"is" →
    French`` inside ``"is" → New York``, or two one-token targets of the same prompt) reads
    its logits from the longer sequence: a causal model's logits at a position do not depend
    on what follows. On CounterFact this halves the tokens run.

    Rows in ``next_for`` (and bare-prompt rows) also keep the full next-token distribution
    after their prompt, for the locality metrics.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    unique = list(dict.fromkeys(rows))
    keep_next = set(next_for)
    encoded = [encode_row(tokenizer, row) for row in unique]
    inputs = [tuple(head + tail[:-1]) for head, tail in encoded]
    carrier_of = _carriers(inputs)
    # the earliest position whose logits some row served by the carrier needs
    first: dict[tuple[int, ...], int] = {}
    for (head, _), seq in zip(encoded, inputs, strict=True):
        carrier = carrier_of[seq]
        first[carrier] = min(first.get(carrier, len(carrier)), len(head) - 1)
    carriers = sorted(first, key=len)
    device = input_device(model)
    pad = pad_id(tokenizer)
    spans: dict[tuple[int, ...], torch.Tensor] = {}
    for start in range(0, len(carriers), batch_size):
        batch = carriers[start : start + batch_size]
        ids, mask = pad_right(batch, pad, device)
        bounds = [(first[seq], len(seq) - 1) for seq in batch]
        logits = _span_logits(model, ids, mask, bounds)
        spans.update(zip(batch, logits, strict=True))
    out: dict[ScoreRow, RowScore] = {}
    for row, (head, tail), seq in zip(unique, encoded, inputs, strict=True):
        carrier = carrier_of[seq]
        offset = len(head) - 1 - first[carrier]
        span = spans[carrier][offset : offset + max(len(tail), 1)]
        out[row] = _row_score(span, tail, row in keep_next or row.target is None)
    return out


def _carriers(inputs: Iterable[tuple[int, ...]]) -> dict[tuple[int, ...], tuple[int, ...]]:
    """Map each sequence to a sequence of the set that extends it and is no one's prefix.

    In sorted order, the extensions of a sequence directly follow it; walking backwards,
    a sequence extended by its successor shares that successor's carrier.
    """
    distinct = sorted(set(inputs))
    carrier: dict[tuple[int, ...], tuple[int, ...]] = {}
    for i in range(len(distinct) - 1, -1, -1):
        seq = distinct[i]
        nxt = distinct[i + 1] if i + 1 < len(distinct) else None
        extended = nxt is not None and nxt[: len(seq)] == seq
        carrier[seq] = carrier[nxt] if extended else seq  # type: ignore[index]
    return carrier


def _span_logits(
    model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, spans: list[tuple[int, int]]
) -> list[torch.Tensor]:
    """Logits of each row at positions ``first..last`` (inclusive) only.

    The unembedding is ~20% of a small model's compute per token and the prompt positions
    need none of it, so the body runs once and the head only where a metric looks.
    Architectures whose head is more than a linear map (logit scaling or soft-capping)
    take the plain full forward.
    """
    config = model.config
    plain_head = not any(
        getattr(config, name, None) for name in ("final_logit_softcapping", "logit_scale")
    )
    head = model.get_output_embeddings() if plain_head else None
    if head is None or model.base_model is model:
        full = model(input_ids=ids, attention_mask=mask).logits
        return [full[j, a : b + 1] for j, (a, b) in enumerate(spans)]
    shared = _shared_head(ids, mask, min(a for a, _ in spans))
    if shared >= MIN_SHARED_HEAD:
        hidden = _body_after_head(model, ids, mask, shared)
        spans = [(a - shared, b - shared) for a, b in spans]
    else:
        hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    picked = torch.cat([hidden[j, a : b + 1] for j, (a, b) in enumerate(spans)])
    flat = head(picked)
    sizes = [b - a + 1 for a, b in spans]
    return list(flat.split(sizes))


MIN_SHARED_HEAD = 8
"""Tokens every row of a batch must share before they are run once: chat rows share the
template's system prompt and the user turn's opening (two dozen tokens on SmolLM2)."""


def _shared_head(ids: torch.Tensor, mask: torch.Tensor, limit: int) -> int:
    """How many leading tokens every row of the batch has in common (at most ``limit``: the
    positions whose logits are read must come out of the rows' own pass)."""
    same = (ids == ids[:1]).all(0) & mask.bool().all(0)
    differs = (~same).nonzero()
    length = int(differs[0]) if len(differs) else ids.shape[1]
    return min(length, limit)


def _body_after_head(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, shared: int) -> torch.Tensor:
    """The last hidden states after the first ``shared`` tokens, with those tokens run once
    for the batch and their keys/values repeated for every row (a causal model's later
    positions read the head only through them)."""
    head = model.base_model(input_ids=ids[:1, :shared], use_cache=True).past_key_values
    head.batch_repeat_interleave(ids.shape[0])
    positions = torch.arange(shared, ids.shape[1], device=ids.device)[None].expand(ids.shape[0], -1)
    return model.base_model(
        input_ids=ids[:, shared:], attention_mask=mask, position_ids=positions,
        past_key_values=head, use_cache=True,
    ).last_hidden_state


def _row_score(span: torch.Tensor, tail: list[int], keep_next: bool) -> RowScore:
    """``span`` holds the logits from the prompt's last position, one per target token."""
    target = torch.tensor(tail, dtype=torch.long)
    nxt = span[0].float().log_softmax(-1).cpu() if keep_next else None
    if not tail:
        empty = torch.empty(0)
        return RowScore(target, empty, empty.long(), next_logprobs=nxt)
    return RowScore(
        target_ids=target,
        logprobs=target_logprobs(span, target, 1).cpu(),
        argmax=target_argmax(span, len(tail), 1).cpu(),
        next_logprobs=nxt,
    )


@contextmanager
def with_delta(model: nn.Module, delta: WeightDelta | None) -> Iterator[nn.Module]:
    """The model with ``delta`` applied inside the block, bit-identically restored after."""
    if delta is None:
        yield model
        return
    base = delta.apply(model)
    try:
        yield model
    finally:
        WeightDelta.revert(model, base)


def score_two_sided(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    edited_rows: Iterable[ScoreRow],
    base_rows: Iterable[ScoreRow],
    delta: WeightDelta | None,
    batch_size: int = 32,
    next_for: Collection[ScoreRow] = (),
) -> tuple[dict[ScoreRow, RowScore], dict[ScoreRow, RowScore]]:
    """Scores of the edited model (``delta`` applied) and of the unedited one (as found).

    ``model`` holds the unedited weights. Without a delta both sides are the same model, so
    every row is scored once and shared (locality then comes out exactly KL 0, overlap 100%).
    """
    edited_rows, base_rows = list(edited_rows), list(base_rows)
    if delta is None:
        scores = score_rows(model, tokenizer, edited_rows + base_rows, batch_size, next_for)
        return scores, scores
    base = score_rows(model, tokenizer, base_rows, batch_size, next_for) if base_rows else {}
    with with_delta(model, delta):
        edited = score_rows(model, tokenizer, edited_rows, batch_size, next_for)
    return edited, base


CHUNK_RECORDS = 32
"""Records scored per apply/revert cycle: bounds the next-token distributions held at once."""

RecordT = TypeVar("RecordT")


def score_records(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[RecordT],
    rows_of: Callable[[RecordT], tuple[list[ScoreRow], list[ScoreRow]]],
    metrics_of: Callable[[RecordT, dict[ScoreRow, RowScore], dict[ScoreRow, RowScore]], dict[str, float | None]],
    delta: WeightDelta | None,
    batch_size: int = 32,
) -> list[dict[str, float | None]]:
    """Per-record metrics, scoring ``CHUNK_RECORDS`` records per apply/revert of ``delta``.

    ``rows_of(record)`` gives the rows the edited side scores and the rows the unedited side
    scores (the latter also keep their next-token distribution, for locality);
    ``metrics_of(record, edited, base)`` turns the scores into that record's fractions.
    """
    metrics: list[dict[str, float | None]] = []
    for start in range(0, len(records), CHUNK_RECORDS):
        chunk = records[start : start + CHUNK_RECORDS]
        edited_rows: list[ScoreRow] = []
        base_rows: list[ScoreRow] = []
        for record in chunk:
            edited_part, base_part = rows_of(record)
            edited_rows += edited_part
            base_rows += base_part
        edited, base = score_two_sided(
            model, tokenizer, edited_rows, base_rows, delta, batch_size, next_for=base_rows
        )
        metrics += [metrics_of(record, edited, base) for record in chunk]
    return metrics
