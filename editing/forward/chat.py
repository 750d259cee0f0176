"""The text of a chat turn, rendered one way for every part that needs it.

The editor's chat prefix (:mod:`editing.targets.templates`), the evaluation's chat rows and
the service's quality gate all score a fact asked as a user's message; they must read the
same text, so :func:`chat_prompt` is the one rendering, through the tokenizer's own template
as the service's chat endpoint does (``models.generate.chat``), with a plain "Role: text"
fallback for base models.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

PLAIN_TEMPLATE = "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endfor %}" \
    "{% if add_generation_prompt %}Assistant:{% endif %}"
"""For tokenizers without a chat template (base models): a plain "Role: text" dialogue."""


def chat_prompt(tokenizer: PreTrainedTokenizerBase, user: str, system: str | None = None) -> str:
    """The text the model reads before its answer to ``user``: the tokenizer's chat template
    with the generation prompt (``system`` None: the template's default, e.g. SmolLM2's own
    system prompt). The text is tokenized as any prompt (``editing.forward.tokens.prompt_ids``), so
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
