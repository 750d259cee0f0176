"""Chat messages to prompt tokens with the tokenizer's own chat template.

The default model is a chat model: a question asked without its template is out of the
distribution it was tuned on, so a chat endpoint must render the roles exactly as the model
saw them in training (the template shipped with the tokenizer), not a format of our own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

ROLES = ("system", "user", "assistant")


class NoChatTemplate(ValueError):
    """The tokenizer ships no chat template, so chat messages have no defined rendering."""


class BadMessages(ValueError):
    """Messages the template cannot render (unknown role, empty list, non-text content)."""


def has_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_chat(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, Any]],
    add_generation_prompt: bool = True,
) -> list[int]:
    """Token ids of ``messages`` rendered by the tokenizer's chat template, ending with the
    assistant's turn opened (``add_generation_prompt``) so the model answers next.

    Raises :class:`NoChatTemplate` when the tokenizer has none and :class:`BadMessages` for
    a role outside system / user / assistant or an empty conversation. A message's
    ``name`` reaches the template, which may use it or not (as OpenAI accepts it).
    """
    if not has_chat_template(tokenizer):
        raise NoChatTemplate(
            "this model's tokenizer has no chat template; use the completions endpoint with "
            "a plain prompt instead"
        )
    if not messages:
        raise BadMessages("messages is empty; give at least one message")
    for i, message in enumerate(messages):
        if message.get("role") not in ROLES:
            raise BadMessages(f"messages[{i}].role must be one of {', '.join(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise BadMessages(f"messages[{i}].content must be text")
    ids = tokenizer.apply_chat_template(
        [{k: m[k] for k in ("role", "content", "name") if k in m} for m in messages],
        add_generation_prompt=add_generation_prompt, tokenize=True,
    )
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers may return a BatchEncoding
        ids = ids["input_ids"]
    return [int(t) for t in ids]
