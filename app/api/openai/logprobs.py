"""Log-probs in OpenAI's two shapes (chat's ``content`` list, completions' parallel lists),
for whole answers and for the tokens a streamed chunk adds.

A stream sends, with each chunk, the log-probs of the tokens generated since the previous
chunk (:class:`StreamCursor`), so the concatenated chunks carry exactly the list a
non-streamed answer has, whatever text a stop string holds back meanwhile.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase

from models.generate import Request
from models.generate.engine import TopLogprobs


def chat_content(tokenizer: PreTrainedTokenizerBase, ids: list[int], values: list[float],
                 tops: list[TopLogprobs]) -> list[dict[str, Any]]:
    """Chat's ``logprobs.content``: one entry per token, with its alternatives."""
    def entry(t: int, v: float) -> dict[str, Any]:
        text = tokenizer.decode([t])
        return {"token": text, "logprob": v, "bytes": list(text.encode())}

    return [{**entry(t, v), "top_logprobs": [entry(a, b) for a, b in alts]}
            for t, v, alts in zip(ids, values, tops, strict=True)]


def completion_lists(tokenizer: PreTrainedTokenizerBase, ids: list[int],
                     values: list[float | None], tops: list[TopLogprobs | None],
                     offset: int = 0) -> dict[str, Any]:
    """Completions' ``logprobs``: tokens, their log-probs, alternatives and text offsets
    (counted from ``offset``, where the first token's text starts)."""
    tokens = [tokenizer.decode([t]) for t in ids]
    offsets, at = [], offset
    for t in tokens:
        offsets.append(at)
        at += len(t)
    return {"tokens": tokens, "token_logprobs": values,
            "top_logprobs": [None if top is None else {tokenizer.decode([t]): v for t, v in top}
                             for top in tops],
            "text_offset": offsets}


class StreamCursor:
    """Per choice, how many generated tokens' log-probs were already streamed."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, requests: list[Request]):
        self.tokenizer = tokenizer
        self.requests = requests
        self.sent = [0] * len(requests)
        self.chars = [0] * len(requests)

    def _new(self, i: int) -> tuple[list[int], list[float], list[TopLogprobs]]:
        """The tokens of choice ``i`` not streamed yet (those whose log-probs the engine
        thread has written: it appends the token first, then its log-probs)."""
        r = self.requests[i]
        ready = min(len(r.token_logprobs), len(r.top_logprobs), len(r.output_ids))
        start, self.sent[i] = self.sent[i], max(self.sent[i], ready)
        return r.output_ids[start:ready], r.token_logprobs[start:ready], r.top_logprobs[start:ready]

    def chat(self, i: int) -> dict[str, Any]:
        ids, values, tops = self._new(i)
        return {"content": chat_content(self.tokenizer, ids, values, tops)}

    def completion(self, i: int) -> dict[str, Any]:
        ids, values, tops = self._new(i)
        lists = completion_lists(self.tokenizer, ids, list(values), list(tops), self.chars[i])
        self.chars[i] += sum(len(t) for t in lists["tokens"])
        return lists
