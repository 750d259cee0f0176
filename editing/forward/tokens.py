"""Tokenisation conventions shared by editing, evaluation and the service.

Two rules every part of the project must agree on:

* a target continues a prompt with a leading space: ``prompt + " " + target``; its token ids
  are whatever the tokenizer produces for that joined text after the prompt's own ids (so a
  tokenizer that merges the space into the first target token, or a sentencepiece tokenizer
  with a dummy prefix, both come out right);
* the *fact token* is the subject's last token, located by character offsets, never by
  string search on decoded tokens (BOS tokens and merged spaces would fool that).
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase


def prompt_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of a prompt, with the special tokens (e.g. BOS) the tokenizer adds."""
    return list(tokenizer(text).input_ids)


def continuation_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: str, target: str, sep: str = " "
) -> list[int]:
    """Ids of ``sep + target`` as it continues ``prompt`` (``sep`` is a space but for an
    answer that opens a chat turn, whose template already ends the prompt with a newline).

    Tokenising the joined text and dropping the prompt's ids keeps merges at the boundary
    consistent with how the model sees the text; if the prompt's ids are not a prefix of the
    joined ids (a merge across the boundary), fall back to tokenising the target alone.
    """
    head = prompt_ids(tokenizer, prompt)
    joined = list(tokenizer(prompt + sep + target).input_ids)
    eos = tokenizer.eos_token_id
    if eos is not None and joined and joined[-1] == eos and (not head or head[-1] != eos):
        joined = joined[:-1]  # tokenizers that append EOS
    if joined[: len(head)] == head and len(joined) > len(head):
        return joined[len(head):]
    return list(tokenizer(sep + target, add_special_tokens=False).input_ids)


def fact_token_index(tokenizer: PreTrainedTokenizerBase, text: str, subject_end: int) -> int:
    """Index (in ``prompt_ids(text)``) of the token holding the subject's last character.

    ``subject_end`` is the character offset just past the subject in ``text``.
    """
    if subject_end <= 0:
        raise ValueError("subject_end must be positive")
    if tokenizer.is_fast:
        enc = tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
        last = None
        for i, ((start, end), special) in enumerate(
            zip(enc["offset_mapping"], enc["special_tokens_mask"], strict=True)
        ):
            if not special and end > start and start < subject_end:
                last = i
        if last is None:
            raise ValueError(f"no token covers the subject in {text!r}")
        return last
    # Slow tokenizers have no offsets: the prefix up to the subject's end ends on its last token.
    return len(prompt_ids(tokenizer, text[:subject_end])) - 1


def subject_span(prompt: str, subject: str, prefix: str = "") -> tuple[str, int]:
    """``(prefix + prompt.format(subject), char offset just past the subject)``."""
    at = prompt.index("{}")
    text = prefix + prompt[:at] + subject + prompt[at + 2:]
    return text, len(prefix) + at + len(subject)
