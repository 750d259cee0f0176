"""Chat rendering and greedy batched generation, as the evaluation needs them.

Interim versions kept behind one function each (:func:`render_chat`, :func:`generate_greedy`):
the service's own batched engine and chat rendering (``models/generate/``) are to replace
them, so that the evaluation's chat answer is the answer a user of the service gets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from editing.batch import pad_id
from editing.tokens import prompt_ids
from models.placement import input_device

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

    Batched with left padding, prompts sorted by length so little goes to padding; a row
    stops at the model's end-of-sequence token.
    """
    encoded = [prompt_ids(tokenizer, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    device = input_device(model)
    pad = pad_id(tokenizer)
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        part = order[start : start + batch_size]
        longest = max(len(encoded[i]) for i in part)
        ids = torch.full((len(part), longest), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(part):
            seq = encoded[i]
            ids[row, longest - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, longest - len(seq):] = 1
        generated = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
            temperature=None, top_p=None, top_k=None,
        )
        for row, i in enumerate(part):
            out[i] = tokenizer.decode(generated[row, longest:], skip_special_tokens=True)
    return out
