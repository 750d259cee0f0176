"""``/score``, ``/generate`` and ``/next-tokens`` as engine requests (blocking helpers).

They used to run a forward pass of their own on merged weights; now they share the batch
engine with the /v1 endpoints, so they batch across versions too. Scoring keeps the
editor's leading-space rule (:func:`editing.forward.tokens.continuation_ids`), so "the edit made the
target likelier" is still measured on the very tokens the edit optimised.
"""

from __future__ import annotations

import threading

from app.serving.engine import ServingEngine
from editing.forward.tokens import continuation_ids, prompt_ids
from models.generate import Request, SamplingParams


class EngineFailed(RuntimeError):
    """The engine could not answer (it is stopping, or a step failed)."""


def _run(engine: ServingEngine, version: str, requests: list[Request],
         timeout: float = 600.0) -> list[Request]:
    done = threading.Event()
    left = [len(requests)]
    lock = threading.Lock()

    def on_update(r: Request) -> None:
        if r.finished:
            with lock:
                left[0] -= 1
                if not left[0]:
                    done.set()

    for r in requests:
        r.on_update = on_update
    engine.submit(version, requests)
    if not done.wait(timeout):
        for r in requests:
            r.cancel()
        raise EngineFailed(f"no answer within {timeout:.0f}s")
    failed = [r for r in requests if r.finish_reason == "error"]
    if failed:
        raise EngineFailed(failed[0].error or "generation failed")
    return requests


def score(engine: ServingEngine, version: str, prompt: str,
          candidates: list[str]) -> list[tuple[float, int]]:
    """(sum of token log-probs, token count) of ``" " + candidate`` after ``prompt``, each."""
    tokenizer = engine.engine.tokenizer
    head = prompt_ids(tokenizer, prompt)
    tails = [continuation_ids(tokenizer, prompt, c) for c in candidates]
    params = SamplingParams(max_tokens=0, prompt_logprobs=True, prompt_logprobs_from=len(head))
    done = _run(engine, version, [Request(head + tail, params) for tail in tails])
    out = []
    for r, tail in zip(done, tails, strict=True):
        logprobs = [float(lp) for lp in r.prompt_logprobs[len(head):] if lp is not None]
        out.append((sum(logprobs), len(tail)))
    return out


def generate(engine: ServingEngine, version: str, prompt: str, max_new_tokens: int) -> str:
    """Greedy continuation (deterministic)."""
    ids = prompt_ids(engine.engine.tokenizer, prompt)
    params = SamplingParams(max_tokens=max_new_tokens, temperature=0.0)
    return _run(engine, version, [Request(ids, params)])[0].text


def next_tokens(engine: ServingEngine, version: str, prompt: str,
                k: int) -> list[tuple[str, int, float]]:
    """The ``k`` likeliest next tokens: (decoded text, id, log-prob)."""
    tokenizer = engine.engine.tokenizer
    ids = prompt_ids(tokenizer, prompt)
    params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=k, ignore_eos=True)
    request = _run(engine, version, [Request(ids, params)])[0]
    return [(tokenizer.decode([t]), t, lp) for t, lp in request.top_logprobs[0]]
