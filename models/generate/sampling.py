"""How a request picks its next token, and when its text ends.

Each request owns its ``torch.Generator``, seeded from its ``seed``: the draw of one row
never consumes random numbers of another, so the same seed gives the same text whatever
else shares the batch. Temperature 0 is greedy (argmax), deterministic without a seed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>", "<|end|>")
"""End-of-turn markers of common chat templates; a generation stops at any in the vocab."""


@dataclass(frozen=True)
class SamplingParams:
    """What one request asks of the sampler (OpenAI's fields, already validated)."""

    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None
    """Return each generated token's log-prob and this many alternatives (None: none)."""
    prompt_logprobs: bool = False
    """Return the log-prob of every prompt token after the first (scoring, ``echo``)."""
    prompt_logprobs_from: int = 1
    """With ``prompt_logprobs``: the first prompt token whose log-prob is wanted (earlier
    ones get None), so a score of a continuation leaves its shared head to the prefix
    cache and the output layer runs only where a log-prob is asked."""
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator:
    """The request's own random stream (a fresh random seed when none is given)."""
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
    return torch.Generator(device=device).manual_seed(seed)


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """One token from ``logits`` (V,) in float32: argmax, or temperature + top-p draw."""
    if params.greedy:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        ordered, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(ordered, dim=-1) - ordered < params.top_p  # always keeps the first
        ordered = ordered * keep
        choice = torch.multinomial(ordered / ordered.sum(), 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, extra: Iterable[int] = ()) -> frozenset[int]:
    """End-of-text and end-of-turn ids of ``tokenizer`` (plus ``extra``, e.g. the model's
    generation config): generation ends at any of them, which are not part of the text."""
    ids = set(extra)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN if t in vocab)
    return frozenset(ids)


@dataclass
class TextTracker:
    """The decoded text of the generated tokens, with stop strings applied.

    ``update`` decodes the tokens so far and reports whether a stop string appeared; the
    text ends just before it. ``stable()`` is the text safe to stream: it holds back a
    tail that could still become a stop string, and an incomplete UTF-8 character.
    """

    tokenizer: PreTrainedTokenizerBase
    stop: tuple[str, ...] = ()
    text: str = ""
    stopped: bool = False
    _held: int = field(default=0, repr=False)

    def update(self, token_ids: list[int]) -> bool:
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in self.stop if s) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped, self._held = text[:cut], True, 0
            return True
        self.text = text
        self._held = max((_overlap(text, s) for s in self.stop if s), default=0)
        if text.endswith("\ufffd"):
            self._held = max(self._held, 1)
        return False

    def stable(self, final: bool = False) -> str:
        if final or self.stopped:
            return self.text
        return self.text[: len(self.text) - self._held]


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of ``text`` that begins ``stop``."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
