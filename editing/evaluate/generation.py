"""Greedy batched generation, as the evaluation needs it.

:func:`generate_greedy` runs the service's batch engine, so the evaluation's chat answer is
the answer a user of the service gets. The chat text it answers is
:func:`editing.forward.chat.chat_prompt`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from editing.forward.tokens import prompt_ids
from models.generate import SamplingParams, generate

__all__ = ["generate_greedy"]


@torch.inference_mode()
def generate_greedy(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int = 16,
    batch_size: int = 32,
) -> list[str]:
    """Greedy continuations of ``prompts`` (decoded, special tokens dropped), in order.

    They run through the service's batch engine (:func:`models.generate.generate`), so the
    evaluation's answer is the answer a user of ``/v1/completions`` or ``/v1/chat/completions``
    gets from the same version at temperature 0: the same stop tokens (end of text and end
    of turn), the same decoding. ``batch_size`` rows share each forward pass.
    """
    encoded = [prompt_ids(tokenizer, p) for p in prompts]
    done = generate(model, tokenizer, encoded, SamplingParams(max_tokens=max_new_tokens),
                    max_rows=batch_size)
    return [completion.text for completion in done]
