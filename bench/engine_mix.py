"""The engine alone under ``bench.load``'s mix: requests/s without HTTP, for A/B runs.

    .venv/bin/python -m bench.engine_mix --clients 32 --requests 200
    .venv/bin/python -m bench.engine_mix --profile          # cProfile's top functions

``--clients`` closed-loop clients alternate a greedy 8-token generation and a 2-candidate
score of the same prompt (what ``/generate`` and ``/score`` submit), straight into
:class:`models.generate.BatchEngine` on this thread, so a change to the engine can be timed
before and after in one process on a loaded machine, where a whole-service run is too noisy.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import time
from typing import Any

import torch

from bench.load import CANDIDATES, PROMPT
from editing.forward.tokens import continuation_ids, prompt_ids
from models.generate import BatchEngine, Request, SamplingParams
from models.load import load_model


def run_mix(engine: BatchEngine, clients: int, requests: int, max_new_tokens: int = 8
            ) -> dict[str, Any]:
    """Keep ``clients`` requests in flight until ``requests`` have finished; the rate."""
    tokenizer = engine.tokenizer
    head = prompt_ids(tokenizer, PROMPT)
    tails = [continuation_ids(tokenizer, PROMPT, c) for c in CANDIDATES]
    done = [0]
    submitted = [0]
    turns = [0] * clients

    def submit(index: int) -> None:
        submitted[0] += 1
        turns[index] += 1
        if (turns[index] + index) % 2 == 0:
            batch = [Request(head, SamplingParams(max_tokens=max_new_tokens))]
        else:
            params = SamplingParams(max_tokens=0, prompt_logprobs=True,
                                    prompt_logprobs_from=len(head))
            batch = [Request(head + tail, params) for tail in tails]
        left = [len(batch)]

        def on_update(r: Request) -> None:
            if r.finished:
                left[0] -= 1
                if not left[0]:
                    done[0] += 1
                    if submitted[0] < requests:
                        submit(index)

        for r in batch:
            r.on_update = on_update
            engine.add(r)

    for i in range(clients):
        submit(i)
    started = time.perf_counter()
    steps = engine.steps
    while engine.has_work():
        engine.step()
    elapsed = time.perf_counter() - started
    return {"requests": done[0], "seconds": round(elapsed, 3),
            "requests_per_s": round(done[0] / elapsed, 2), "steps": engine.steps - steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="default: the project's default model")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    engine = BatchEngine(loaded.model, loaded.tokenizer)
    run_mix(engine, 4, 8)  # warm-up
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    result = run_mix(engine, args.clients, args.requests)
    if profiler:
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
