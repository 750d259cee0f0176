"""Batched generation: every request in flight advances in one forward pass per step.

A step admits the requests that arrived since the last one (one padded prefill pass for all
of them, which also yields their first token), then runs one decode pass over every row in
flight, each row with its own version's weight additions (:mod:`models.generate.rows`) and
its own sampler. Rows leave the batch when they finish; the KV cache follows them
(:mod:`models.generate.cache`). ``step`` is driven by the caller (a service's loop thread,
or :func:`generate` for offline use), so the engine owns no thread and no queue policy.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from models.generate import cache as kv
from models.generate import prefix
from models.generate.rows import Additions, RowAdditions
from models.generate.sampling import (
    SamplingParams,
    TextTracker,
    make_generator,
    sample,
    stop_token_ids,
)

TopLogprobs = list[tuple[int, float]]
log = logging.getLogger(__name__)


@dataclass(eq=False)
class Request:
    """One sequence to continue, and what came of it (filled in by the engine)."""

    prompt_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    additions: Additions | None = None
    on_update: Callable[[Request], None] | None = None
    """Called on the engine's thread after each new token and when the request finishes."""
    output_ids: list[int] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[TopLogprobs] = field(default_factory=list)
    prompt_logprobs: list[float | None] = field(default_factory=list)
    prompt_top_logprobs: list[TopLogprobs | None] = field(default_factory=list)
    finish_reason: str | None = None
    """``stop`` (end-of-turn token or stop string), ``length``, ``cancelled`` or ``error``."""
    error: str | None = None
    cancelled: bool = False
    tracker: TextTracker | None = None
    generator: torch.Generator | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def text(self) -> str:
        return self.tracker.text if self.tracker else ""

    def cancel(self) -> None:
        """Stop generating at the next step (a client that went away)."""
        self.cancelled = True


class BatchEngine:
    """Continuous batching on one model that holds the base weights."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 max_rows: int = 64, prefix_tokens: int = 4096):
        self.model = model
        self.tokenizer = tokenizer
        self.max_rows = max_rows
        self.device = model.get_input_embeddings().weight.device
        self.context = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        self.stop_ids = stop_token_ids(tokenizer, eos if isinstance(eos, list)
                                       else [] if eos is None else [eos])
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                          else next(iter(self.stop_ids), 0))
        self.adds = RowAdditions(model)
        self.prefixes = prefix.PrefixStore(prefix_tokens) if prefix_tokens > 0 else None
        """Prompt prefixes already computed (:mod:`models.generate.prefix`); None: off."""
        self._pending: list[Request] = []
        self._lock = threading.Lock()
        self.running: list[Request] = []
        self._admitting: list[Request] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None
        self.steps = 0

    # -- intake -------------------------------------------------------------------------
    def add(self, request: Request) -> None:
        """Queue ``request`` for the next step (thread-safe)."""
        self.add_all([request])

    def add_all(self, requests: Sequence[Request]) -> None:
        """Queue every request, or none: each is checked and prepared first, so a bad one
        (no prompt token) raises ``ValueError`` with nothing queued (thread-safe)."""
        for request in requests:
            if not request.prompt_ids:
                raise ValueError("a request needs at least one prompt token")
        for request in requests:
            self.prepare(request)
        with self._lock:
            self._pending.extend(requests)

    def prepare(self, request: Request) -> None:
        """Give ``request`` its stop-string tracker and its random generator."""
        request.tracker = TextTracker(self.tokenizer, request.params.stop)
        request.generator = make_generator(request.params.seed, self.device)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def has_work(self) -> bool:
        return bool(self.running) or self.pending > 0

    # -- stepping -----------------------------------------------------------------------
    @torch.no_grad()
    def step(self) -> int:
        """Admit what is pending (one prefill pass), then one decode pass over all rows in
        flight. Returns the number of rows the step advanced."""
        with self._lock:
            room = max(0, self.max_rows - len(self.running))
            new, self._pending = self._pending[:room], self._pending[room:]
        new = [r for r in new if not self._drop_cancelled(r)]
        if new:
            self._admitting = new  # neither pending nor running until the prefill ends
            self._prefill(new)
            self._admitting = []
        for r in self.running:
            self._drop_cancelled(r)
        self._prune()
        if self.running:
            self._decode()
        self.steps += 1
        return len(new) + len(self.running)

    def _drop_cancelled(self, request: Request) -> bool:
        """Finish a request its client cancelled; True if it did."""
        if request.cancelled and not request.finished:
            self._finish(request, "cancelled")
        return request.cancelled

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                 cache: DynamicCache, rows: Sequence[Request], keep: int) -> torch.Tensor:
        with self.adds.rows([r.additions for r in rows]):
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                             cache=cache, use_cache=True, logits_to_keep=keep)
        return out.logits.float()

    @staticmethod
    def _first_logit(request: Request) -> int:
        """The first prompt position whose logits ``request`` needs (the last one for a
        generation; the one before the first scored token for prompt log-probs)."""
        n = len(request.prompt_ids)
        if request.params.prompt_logprobs:
            return max(0, min(request.params.prompt_logprobs_from, n) - 1)
        return n - 1

    def _prefill(self, new: list[Request]) -> None:
        """One pass over the new rows' prompts, each after the longest stored prefix it can
        reuse, with the output layer only at the last positions any row needs."""
        firsts = [self._first_logit(r) for r in new]
        picks = [self.prefixes.lookup(r.additions, r.prompt_ids, first)
                 if self.prefixes is not None else (None, 0)
                 for r, first in zip(new, firsts, strict=True)]
        cache, past = prefix.past_cache(self.model.config, picks, self.device)
        suffixes = [r.prompt_ids[n:] for r, (_, n) in zip(new, picks, strict=True)]
        length = max(len(s) for s in suffixes)
        ids = torch.full((len(new), length), self.pad_id, dtype=torch.long)
        fresh = torch.zeros((len(new), length), dtype=torch.long)
        for i, suffix in enumerate(suffixes):
            ids[i, length - len(suffix):] = torch.tensor(suffix)
            fresh[i, length - len(suffix):] = 1
        ids, fresh = ids.to(self.device), fresh.to(self.device)
        reused = torch.tensor([[n] for _, n in picks], device=self.device)
        positions = (reused + fresh.cumsum(-1) - 1).clamp(min=0)
        mask = torch.cat([past, fresh], dim=1)
        keep = max(len(r.prompt_ids) - first for r, first in zip(new, firsts, strict=True))
        logits = self._forward(ids, mask, positions, cache, new, keep)
        self._store_prefixes(new, cache, mask)
        joined: list[int] = []
        for i, (r, first) in enumerate(zip(new, firsts, strict=True)):
            if r.params.prompt_logprobs:
                self._score_prompt(r, logits[i, keep - (len(r.prompt_ids) - first):], first)
            if r.params.max_tokens <= 0:
                self._finish(r, "length")
                continue
            self._accept(r, logits[i, -1])
            if not r.finished:
                joined.append(i)
        if joined:
            mask = kv.keep_rows(cache, mask, joined)
            self._cache, self._mask = kv.merge(self._cache, self._mask, cache, mask)
            self.running.extend(new[i] for i in joined)

    def _store_prefixes(self, new: list[Request], cache: DynamicCache,
                        mask: torch.Tensor) -> None:
        """Keep each new prompt's rows for later prefills, unless a stored one covers it."""
        if self.prefixes is None:
            return
        for i, r in enumerate(new):
            if (len(r.prompt_ids) >= self.prefixes.min_tokens
                    and not self.prefixes.covers(r.additions, r.prompt_ids)):
                self.prefixes.add(r.additions, r.prompt_ids, *prefix.row_of(cache, mask, i))

    def _decode(self) -> None:
        assert self._cache is not None and self._mask is not None
        rows = self.running
        ids = torch.tensor([[r.output_ids[-1]] for r in rows], device=self.device)
        positions = torch.tensor([[len(r.prompt_ids) + len(r.output_ids) - 1] for r in rows],
                                 device=self.device)
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(rows), 1))], dim=1)
        logits = self._forward(ids, self._mask, positions, self._cache, rows, 1)
        for i, r in enumerate(rows):
            self._accept(r, logits[i, -1])
        self._prune()

    def _prune(self) -> None:
        """Drop finished rows from the batch and its cache."""
        keep = [i for i, r in enumerate(self.running) if not r.finished]
        if len(keep) == len(self.running):
            return
        if not keep:
            self.running, self._cache, self._mask = [], None, None
            return
        assert self._cache is not None and self._mask is not None
        self._mask = kv.keep_rows(self._cache, self._mask, keep)
        self.running = [self.running[i] for i in keep]

    # -- per-row bookkeeping ------------------------------------------------------------
    def _score_prompt(self, request: Request, logits: torch.Tensor, first: int) -> None:
        """Log-prob of each prompt token after ``first`` given the ones before, from the
        logits at positions ``first`` onwards (earlier tokens, the first too, get None)."""
        logprobs = torch.log_softmax(logits[:-1], dim=-1)
        targets = torch.tensor(request.prompt_ids[first + 1:], device=logprobs.device)
        picked = logprobs.gather(1, targets[:, None])[:, 0].tolist()
        request.prompt_logprobs = [*([None] * (first + 1)), *picked]
        k = request.params.logprobs or 0
        tops: list[TopLogprobs | None] = [None] * (first + 1)
        if k:
            values, index = torch.topk(logprobs, min(k, logprobs.shape[-1]), dim=-1)
            tops += [list(zip(i.tolist(), v.tolist(), strict=True))
                     for v, i in zip(values, index, strict=True)]
        else:
            tops += [[] for _ in picked]
        request.prompt_top_logprobs = tops

    def _accept(self, request: Request, logits: torch.Tensor) -> None:
        """Sample the request's next token from ``logits`` (V,) and decide if it is done."""
        params = request.params
        assert request.generator is not None and request.tracker is not None
        token = sample(logits, params, request.generator)
        if token in self.stop_ids and not params.ignore_eos:
            self._finish(request, "stop")
            return
        request.output_ids.append(token)
        if params.logprobs is not None:
            logprobs = torch.log_softmax(logits, dim=-1)
            request.token_logprobs.append(float(logprobs[token]))
            if params.logprobs:
                values, index = torch.topk(logprobs, min(params.logprobs, logprobs.shape[-1]))
                request.top_logprobs.append(list(zip(index.tolist(), values.tolist(), strict=True)))
            else:
                request.top_logprobs.append([])
        if request.tracker.update(request.output_ids):
            self._finish(request, "stop")
        elif len(request.output_ids) >= params.max_tokens:
            self._finish(request, "length")
        elif self.context and len(request.prompt_ids) + len(request.output_ids) >= self.context:
            self._finish(request, "length")
        elif request.on_update:
            request.on_update(request)

    def _finish(self, request: Request, reason: str) -> None:
        request.finish_reason = reason
        if request.on_update:
            request.on_update(request)

    def fail_all(self, message: str) -> None:
        """Finish every request with an error (the loop hit an exception)."""
        with self._lock:
            pending, self._pending = self._pending, []
        rows = [*self._admitting, *self.running, *pending]
        self.running, self._admitting = [], []
        self._cache, self._mask = None, None
        for r in rows:
            if not r.finished:
                r.error = message
                try:  # one caller's failing hook must not leave the others unfinished
                    self._finish(r, "error")
                except Exception:  # noqa: BLE001
                    log.exception("a request's update hook failed")


@dataclass
class Completion:
    """What :func:`generate` returns per prompt."""

    text: str
    token_ids: list[int]
    finish_reason: str
    token_logprobs: list[float]


def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
             prompts: Sequence[str | list[int]], params: SamplingParams | None = None,
             additions: Sequence[Additions | None] | None = None,
             max_rows: int = 64) -> list[Completion]:
    """Continue every prompt in batches (offline: the caller's thread runs the steps).

    ``prompts`` are text (tokenized with the tokenizer's special tokens, e.g. BOS) or token
    ids (e.g. from :func:`models.generate.chat.render_chat`). ``params`` defaults to greedy,
    16 tokens; ``additions`` gives each prompt a version's weight additions (default: the
    model's own weights). Results are in prompt order.
    """
    params = params or SamplingParams()
    engine = BatchEngine(model, tokenizer, max_rows=max_rows)
    requests = []
    for i, prompt in enumerate(prompts):
        ids = list(tokenizer(prompt).input_ids) if isinstance(prompt, str) else list(prompt)
        request = Request(ids, params, additions[i] if additions else None)
        engine.add(request)
        requests.append(request)
    while engine.has_work():
        engine.step()
    return [Completion(r.text, r.output_ids, r.finish_reason or "length", r.token_logprobs)
            for r in requests]
