"""Context templates: short prefixes sampled from the model itself.

Keys and targets are averaged over the fact placed after several prefixes, so an edit holds in
context and not only for the bare prompt. z and the keys must use the same prefixes, so they
are generated once per model (seeded sampling, hence reproducible) and cached by the model's
fingerprint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from editing.forward.chat import answer_sep, chat_prompt  # the one rendering of a chat turn
from editing.forward.rng import cuda_devices
from models.files import atomic_write
from models.placement import input_device


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


def question_prefix(tokenizer: PreTrainedTokenizerBase, question: str) -> str:
    """The chat template with ``question`` as the user's message, up to the assistant's first
    word: the sentence that follows is the start of the answer, as a chat model writes it
    (the name term's ``"chat"`` context, ``editing.targets.encoding.encode_names``)."""
    chat = chat_prompt(tokenizer, question)
    return chat + answer_sep(chat)


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
