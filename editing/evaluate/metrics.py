"""The metric arithmetic of docs/design.md §8, on plain tensors (no model, no tokenizer).

Kept apart from the model plumbing so every definition can be checked on hand-built logits:
a metric that is wrong by a sign or an off-by-one position still produces plausible numbers
on a real model, and only a known-answer test catches it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import torch

from editing.forward.logprob import target_logprobs  # the one definition; re-exported here

__all__ = ["target_logprobs"]


def target_argmax(logits: torch.Tensor, n_target: int, prompt_len: int) -> torch.Tensor:
    """The model's argmax token at each teacher-forced target position."""
    return logits[prompt_len - 1 : prompt_len - 1 + n_target].argmax(-1)


def mean_nll(logprobs: torch.Tensor) -> float:
    """Mean per-token negative log-likelihood (length-normalised, as ROME/MEMIT compare)."""
    if logprobs.numel() == 0:
        raise ValueError("mean NLL of an empty target")
    return float(-logprobs.double().mean())


def prefers(nll_preferred: float, nll_other: float) -> bool:
    """Success: the preferred target is strictly more likely per token than the other."""
    return nll_preferred < nll_other


def all_tokens_hit(argmax_ids: torch.Tensor, target_ids: torch.Tensor) -> bool:
    """Accuracy: every target token is the argmax under teacher forcing."""
    return bool((argmax_ids.cpu() == target_ids.cpu()).all())


def token_accuracy(argmax_ids: torch.Tensor, target_ids: torch.Tensor) -> float:
    """Fraction of target tokens that are the argmax (zsRE's per-token accuracy)."""
    if target_ids.numel() == 0:
        raise ValueError("token accuracy of an empty target")
    return float((argmax_ids.cpu() == target_ids.cpu()).double().mean())


def kl_divergence(base_logprobs: torch.Tensor, edited_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(base ‖ edited) in nats for each row of ``[..., vocab]`` log-probabilities.

    Computed in float64: the typical locality KL of a good edit is ~1e-3 nats, too close to
    float32 rounding of a 50k-term sum to trust.
    """
    p = base_logprobs.double()
    q = edited_logprobs.double().to(p.device)
    return (p.exp() * (p - q)).sum(-1)


def topk_overlap(base_logits: torch.Tensor, edited_logits: torch.Tensor, k: int) -> torch.Tensor:
    """Per row, the fraction of the base model's top-k tokens also in the edited model's top-k."""
    if k < 1 or k > base_logits.shape[-1]:
        raise ValueError(f"k must be in [1, vocab], got {k}")
    top_base = base_logits.topk(k, dim=-1).indices
    top_edit = edited_logits.to(base_logits.device).topk(k, dim=-1).indices
    shared = (top_base.unsqueeze(-1) == top_edit.unsqueeze(-2)).any(-1).sum(-1)
    return shared.double() / k


def mean(values: Iterable[float]) -> float | None:
    """Mean of a possibly empty collection (``None`` when empty, never a fake 0)."""
    values = list(values)
    return sum(values) / len(values) if values else None


def percent(per_record: Iterable[float | None]) -> float | None:
    """Mean over records of per-record fractions, as a percentage 0–100 (``None`` if none)."""
    m = mean(v for v in per_record if v is not None)
    return None if m is None else 100.0 * m


def contains_word(text: str, phrase: str) -> bool:
    """``phrase`` occurs in ``text`` as whole words, case-insensitively ("Paris" is in
    "paris, France" but not in "Parisian"); a blank phrase occurs nowhere."""
    if not phrase.strip():
        return False
    pattern = r"(?<!\w)" + re.escape(phrase.strip()) + r"(?!\w)"
    return re.search(pattern, text, flags=re.IGNORECASE) is not None


def states_new_fact(answer: str, target_new: str, target_true: str | None) -> bool:
    """Generated efficacy: the answer names the new target and not the old one."""
    return contains_word(answer, target_new) and not (
        target_true is not None and contains_word(answer, target_true)
    )


_WORD = re.compile(r"\w+|[^\w\s]")


def ngram_entropy(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """ROME/MEMIT's fluency: the weighted mean over ``ns`` of the entropy (bits) of the text's
    n-gram frequencies. Repetitive text ("the the the") scores low. Words are split on a
    regular expression (words and punctuation) where ROME uses NLTK's tokenizer; a text
    shorter than n words contributes 0 for that n."""
    words = _WORD.findall(text.lower())
    parts = []
    for n, weight in zip(ns, weights, strict=True):
        counts = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        total = sum(counts.values())
        entropy = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
        parts.append(weight * entropy)
    return sum(parts) / len(parts)


def name_break(
    name_ids: torch.Tensor, base_argmax: torch.Tensor, edited_argmax: torch.Tensor, min_tokens: int = 2
) -> float | None:
    """Name integrity, teacher forced over the subject's tokens where the model writes the
    name: ``None`` unless the unedited model predicts (argmax) at least ``min_tokens`` of
    them; else 1.0 when the edited model no longer predicts one of those, 0.0 when it
    predicts them all. Tokens the unedited model missed cannot break."""
    predicted = base_argmax.cpu() == name_ids.cpu()
    if int(predicted.sum()) < min_tokens:
        return None
    return float(bool((edited_argmax.cpu()[predicted] != name_ids.cpu()[predicted]).any()))


NON_PERCENT_KEYS: frozenset[str] = frozenset({"kl", "chat_kl", "fluency"})
"""Metrics averaged as they are (KL in nats, fluency in bits) rather than as a percentage."""


def aggregate(per_record: Sequence[Mapping[str, float | None]], keys: Iterable[str]) -> dict:
    """Mean over the records that define each key (``None`` where none does)."""
    out: dict[str, float | None] = {}
    for key in keys:
        values = [m.get(key) for m in per_record]
        if key in NON_PERCENT_KEYS:
            out[key] = mean(v for v in values if v is not None)
        else:
            out[key] = percent(values)
    return out
