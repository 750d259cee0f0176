"""Queries against whatever weights the caller holds: score, generate, top-k next tokens.

Pure functions of (model, tokenizer, input): the runtime decides which version's weights they
see. Scoring is :func:`editing.forward.logprob.continuation_logprobs`: the same leading-space rule the
editor uses for targets, so "the edit made the target likelier" is measured on the very tokens
the edit optimised.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from editing.forward.logprob import continuation_logprobs
from editing.forward.tokens import prompt_ids
from models.placement import input_device


@torch.no_grad()
def score(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, candidates: list[str]
) -> list[tuple[float, int]]:
    """(sum of token log-probs, token count) of ``" " + candidate`` after ``prompt``, each."""
    per_token = continuation_logprobs(model, tokenizer, prompt, candidates)
    return [(float(lp.double().sum()), lp.numel()) for lp in per_token]


@torch.no_grad()
def generate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, max_new_tokens: int
) -> str:
    """Greedy continuation (deterministic, so two processes on one version agree)."""
    device = input_device(model)
    ids = torch.tensor([prompt_ids(tokenizer, prompt)], device=device)
    output = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True)


@torch.no_grad()
def next_tokens(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, k: int
) -> list[tuple[str, int, float]]:
    """The ``k`` likeliest next tokens: (decoded text, id, log-prob)."""
    device = input_device(model)
    ids = torch.tensor([prompt_ids(tokenizer, prompt)], device=device)
    logits = model(input_ids=ids).logits[0, -1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    top = torch.topk(logprobs, min(k, logprobs.shape[0]))
    return [
        (tokenizer.decode([int(i)]), int(i), float(v))
        for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]
