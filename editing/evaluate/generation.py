"""Chat rendering and greedy batched generation, as the evaluation needs them.

:func:`render_chat` gives the chat as text (the evaluation scores text rows) through the
tokenizer's own template, as the service's chat endpoint does (``models.generate.chat``), with
a plain "Role: text" fallback for base models; :func:`generate_greedy` runs the service's
batch engine, so the evaluation's chat answer is the answer a user of the service gets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from editing.tokens import prompt_ids
from models.generate import SamplingParams, generate

PLAIN_TEMPLATE = "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endfor %}" \
    "{% if add_generation_prompt %}Assistant:{% endif %}"
"""For tokenizers without a chat template (base models): a plain "Role: text" dialogue."""


def render_chat(tokenizer: PreTrainedTokenizerBase, user: str, system: str | None = None) -> str:
    """The text the model reads before its answer to ``user``: the tokenizer's chat template
    with the generation prompt (``system`` None: the template's default, e.g. SmolLM2's own
    system prompt). The text is tokenized as any prompt (``editing.tokens.prompt_ids``), so
    a BOS that the tokenizer adds itself is taken off the front here, not doubled."""
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": user}
    ]
    template = None if getattr(tokenizer, "chat_template", None) else PLAIN_TEMPLATE
    text = tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=True
    )
    bos = tokenizer.bos_token
    adds_bos = bool(tokenizer("").input_ids) and tokenizer("").input_ids[0] == tokenizer.bos_token_id
    if bos and adds_bos and text.startswith(bos):
        text = text[len(bos):]
    return text


def answer_sep(chat_text: str) -> str:
    """What joins a rendered chat and the answer's first word: nothing after a template that
    ends its generation prompt with a newline (ChatML), else a space ("Assistant: Paris")."""
    return "" if chat_text[-1:].isspace() else " "


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
