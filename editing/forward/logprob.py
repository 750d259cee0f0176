"""Teacher-forced log-probability of a target after a prompt: the one definition.

The CLI's before/after table, the service's ``/score`` and the evaluation metrics all ask
"how likely is ``" " + target`` after ``prompt``"; they share the tokenisation rule
(:mod:`editing.forward.tokens`) and this arithmetic, so a number printed by one is the number the
others would give.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from editing.forward.batch import pad_id, pad_right
from editing.forward.tokens import continuation_ids, prompt_ids
from models.placement import input_device


def target_logprobs(
    logits: torch.Tensor, target_ids: torch.Tensor, prompt_len: int
) -> torch.Tensor:
    """Log-probabilities of a teacher-forced target, one per target token.

    ``logits`` is ``[seq, vocab]`` for the sequence ``prompt + target``; the token at position
    ``prompt_len + j`` is predicted by the logits at ``prompt_len + j - 1``.
    """
    if prompt_len < 1:
        raise ValueError("a prompt needs at least one token to predict the target from")
    n = target_ids.shape[0]
    rows = logits[prompt_len - 1 : prompt_len - 1 + n].float()
    if rows.shape[0] != n:
        raise ValueError(f"logits hold {logits.shape[0]} positions, need {prompt_len + n - 1}")
    return rows.log_softmax(-1).gather(-1, target_ids.view(-1, 1).to(rows.device)).view(-1)


@torch.no_grad()
def continuation_logprobs(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompt: str, targets: Sequence[str]
) -> list[torch.Tensor]:
    """Per-token log-probs of each ``" " + target`` after ``prompt``, in one padded pass."""
    head = prompt_ids(tokenizer, prompt)
    tails = [continuation_ids(tokenizer, prompt, target) for target in targets]
    ids, mask = pad_right([head + tail for tail in tails], pad_id(tokenizer), input_device(model))
    logits = model(input_ids=ids, attention_mask=mask).logits
    return [
        target_logprobs(logits[row], torch.tensor(tail), len(head))
        for row, tail in enumerate(tails)
    ]


def target_logprob(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompt: str, target: str) -> float:
    """Mean log-prob per token of ``" " + target`` after ``prompt`` (teacher forced)."""
    return float(continuation_logprobs(model, tokenizer, prompt, [target])[0].double().mean())
