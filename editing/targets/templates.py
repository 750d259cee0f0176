"""Context templates: short prefixes sampled from the model itself.

Keys and targets are averaged over the fact placed after several prefixes, so an edit holds in
context and not only for the bare prompt. z and the keys must use the same prefixes, so they
are generated once per model (seeded sampling, hence reproducible) and cached by the model's
fingerprint.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from editing.forward.chat import answer_sep, chat_prompt  # the one rendering of a chat turn
from editing.forward.rng import cuda_devices
from editing.requests import EditRequest
from models.files import atomic_write
from models.placement import input_device

if TYPE_CHECKING:
    from editing.hparams import EditHparams


def generate_prefixes(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    starts: tuple[str, ...],
    n_tokens: int,
    seed: int = 0,
) -> list[str]:
    """``[""] + [a sampled continuation of each start + ". "]``; the bare prompt comes first.

    Sampling is top-k 5 under a fixed seed (the RNG state is restored afterwards): greedy
    decoding of small models degenerates into repetitions, which make poor contexts.
    """
    device = input_device(model)
    prefixes = [""]
    with torch.random.fork_rng(devices=cuda_devices()):  # every device's RNG comes back
        for i, start in enumerate(starts):
            torch.manual_seed(seed + i)
            enc = tokenizer(start, return_tensors="pt").to(device)
            with torch.no_grad():
                out = model.generate(
                    **enc, max_new_tokens=n_tokens, do_sample=True, top_k=5,
                    pad_token_id=tokenizer.pad_token_id,
                )
            text = tokenizer.decode(out[0], skip_special_tokens=True)
            text = " ".join(text.replace("{", " ").replace("}", " ").split())
            prefixes.append(text + ". ")
    return prefixes


class ChatTurn(StrEnum):
    """Context prefixes that stand for each request's own chat turn: the other prefixes are
    text shared by every request, these are rendered per request where the rows are encoded
    (``editing.targets.encoding.encode_requests``). A member is a ``str`` so that the list of
    prefixes stays one list; its value is the marker z cache keys have always been computed
    with (no text holds a NUL, so it cannot be mistaken for a sampled prefix)."""

    QUESTION = "\x00question\x00"
    """The request's chat turn with the cloze prompt as the assistant's start
    (:func:`question_prefix`)."""
    ANSWER = "\x00answer\x00"
    """The request's chat turn answered at once (:func:`answer_turn`): the fact is asked as the
    user's message and ``target_new`` is the assistant's first tokens, which is how a chat
    model's user reads the answer."""


def question_prefix(tokenizer: PreTrainedTokenizerBase, question: str) -> str:
    """The chat template with ``question`` as the user's message, up to the assistant's first
    word: the cloze prompt that follows is the start of the answer, as a chat model writes
    it when asked the fact, so the edit is taught where users ask it."""
    chat = chat_prompt(tokenizer, question)
    return chat + answer_sep(chat)


def asked_text(request: EditRequest) -> str:
    """The user's message that asks ``request``: its ``question`` when that names the subject
    (the fact token must lie in it), else its cloze sentence."""
    if request.question and request.subject in request.question:
        return request.question
    return request.text


def answer_turn(tokenizer: PreTrainedTokenizerBase, request: EditRequest) -> tuple[str, int, str]:
    """``(text, end of the subject in it, answer separator)`` of the chat turn that asks
    ``request`` (:func:`asked_text` as the user's message) up to the assistant's first token.
    The fact token is the subject's last token in the user's message: where a user names the
    subject, which is where the edit was measured to act when the model answers a question."""
    asked = asked_text(request)
    chat = chat_prompt(tokenizer, asked)
    start = chat.rindex(asked)
    return chat, start + asked.rindex(request.subject) + len(request.subject), answer_sep(chat)


def chat_prefixes(tokenizer: PreTrainedTokenizerBase, hp: EditHparams) -> list[str]:
    """The chat forms ``hp`` adds after the sampled prefixes: with ``chat.question`` each
    request's own chat turn (:attr:`ChatTurn.QUESTION`), with ``chat.answer`` that turn answered at once
    (:attr:`ChatTurn.ANSWER`)."""
    forms: list[str] = [ChatTurn.QUESTION] if hp.chat.question else []
    forms += [ChatTurn.ANSWER] if hp.chat.answer else []
    return forms


def context_prefixes(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    starts: tuple[str, ...],
    n_tokens: int,
    fingerprint: str,
    cache_dir: Path | None = None,
) -> list[str]:
    """The model's context prefixes, read from / written to ``cache_dir`` when given."""
    if not starts:
        return [""]
    path = None
    if cache_dir is not None:
        key = f"{fingerprint[:16]}-{n_tokens}-{'_'.join(starts)}"
        path = Path(cache_dir) / "templates" / f"{key}.json"
        if path.exists():
            return json.loads(path.read_text())
    prefixes = generate_prefixes(model, tokenizer, starts, n_tokens)
    if path is not None:
        atomic_write(path, json.dumps(prefixes, ensure_ascii=False).encode())
    return prefixes
