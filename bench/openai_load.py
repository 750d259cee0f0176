"""The batch engine under concurrent load, against the same requests sent one at a time.

    .venv/bin/python -m bench.openai_load                     # default model, 32 clients
    .venv/bin/python -m bench.openai_load --duration 30 --tiny

A fresh service (API + worker subprocesses, the test harness) is started. Reported:

1. the lone client: one request at a time, p50 / p95 of ``/generate`` and ``/score``, and
   the requests/s that sending them one by one gives (the baseline);
2. ``bench.load``'s default mix (``/generate`` of 8 tokens and ``/score`` alternating, on
   the active version, while edits commit) at ``--clients``, with its checks (no errors,
   every answer's version known and consistent), and its requests/s over the lone client's;
3. chat, completions and scoring (``echo`` + ``logprobs``) through ``/v1`` over three
   versions while edits commit: requests/s, completion tokens/s, p50 / p95.

(Until the engine was the only query path, this compared it with the one-request-at-a-time
path on merged weights; those figures stay in docs/openai.md as history.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx

from bench.common import machine, table, write_json
from bench.load import CANDIDATES, PROMPT, edit_loop, own_service, percentile, run_queries

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
"""For the tiny model, whose tokenizer has no chat template of its own."""
CHAT = [{"role": "user", "content": "What is the mother tongue of Danielle Darrieux?"}]


def service(tiny: bool, threads: int = 0, device: str | None = None,
            worker_nice: int | None = None, prefix_tokens: int = 4096
            ) -> AbstractContextManager[str]:
    """A service of our own (:func:`bench.load.own_service`) on ``device`` (the service's
    default when None: CUDA where present)."""
    # the engine's prefix store (the service's default, 4096): --prefix-tokens 0 measures
    # the engine without it
    env = {"MODELEDIT_PREFIX_TOKENS": str(prefix_tokens)}
    if device:
        env["MODELEDIT_DEVICE"] = device
    if worker_nice is not None:
        env["MODELEDIT_WORKER_NICE"] = str(worker_nice)
    if threads:  # torch's intra-op pool per process
        env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return own_service(tiny, env, chat_template=CHATML)


def lone_client(url: str, requests: int) -> dict[str, Any]:
    """One client, one request at a time: what a single user waits."""
    latency: dict[str, list[float]] = defaultdict(list)
    with httpx.Client(base_url=url, timeout=120) as client:
        for n in range(requests):
            for endpoint, body in (
                ("/generate", {"prompt": PROMPT, "max_new_tokens": 8}),
                ("/score", {"prompt": PROMPT, "candidates": CANDIDATES}),
            ):
                started = time.perf_counter()
                response = client.post(endpoint, json=body)
                if n:  # the first request warms caches
                    latency[endpoint].append(time.perf_counter() - started)
                response.raise_for_status()
    every = [t for v in latency.values() for t in v]
    return {"endpoints": {e: {"p50_ms": round(1000 * percentile(v, 0.5), 1),
                              "p95_ms": round(1000 * percentile(v, 0.95), 1)}
                          for e, v in latency.items()},
            "rps": round(len(every) / sum(every), 2) if every else 0.0}


def openai_mix(url: str, clients: int, duration: float, edits: int, every_s: float
               ) -> dict[str, Any]:
    """Chat, completions and scoring through /v1 over three versions while edits commit."""
    with httpx.Client(base_url=url, timeout=60) as client:
        models = [m["id"] for m in client.get("/v1/models").json()["data"]
                  if m["id"].startswith("v")][:3]
    latency: dict[str, list[float]] = defaultdict(list)
    tokens = Counter()
    errors: Counter[str] = Counter()
    wrong_model = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def loop(index: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            for n in range(100_000):
                if stop.is_set():
                    return
                kind = ("chat", "completion", "score")[(n + index) % 3]
                model = models[(n + index) % len(models)]
                if kind == "chat":
                    path, body = "/v1/chat/completions", {
                        "model": model, "messages": CHAT, "max_tokens": 16, "temperature": 0}
                elif kind == "completion":
                    path, body = "/v1/completions", {
                        "model": model, "prompt": PROMPT, "max_tokens": 16, "temperature": 0.7,
                        "seed": n}
                else:
                    path, body = "/v1/completions", {
                        "model": model, "prompt": f"{PROMPT} {CANDIDATES[n % 2]}",
                        "max_tokens": 0, "echo": True, "logprobs": 0}
                started = time.perf_counter()
                try:
                    response = client.post(path, json=body)
                    status = response.status_code
                except httpx.HTTPError as exc:
                    response, status = None, type(exc).__name__
                elapsed = time.perf_counter() - started
                with lock:
                    latency[kind].append(elapsed)
                    if response is None or status != 200:
                        errors[f"{kind} {status}"] += 1
                        continue
                    data = response.json()
                    tokens[kind] += data["usage"]["completion_tokens"]
                    wrong_model[0] += data["model"] != model

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(clients)]
    edit_log: list[dict[str, Any]] = []
    editor = threading.Thread(target=edit_loop, args=(url, edits, every_s, stop, edit_log),
                              daemon=True)
    started = time.monotonic()
    for t in [*threads, editor]:
        t.start()
    time.sleep(duration)
    stop.set()
    for t in [*threads, editor]:
        t.join(180)
    wall = time.monotonic() - started
    kinds = {k: {"requests": len(v), "rps": round(len(v) / wall, 2),
                 "tokens_per_s": round(tokens[k] / wall, 1),
                 "p50_ms": round(1000 * percentile(v, 0.5), 1),
                 "p95_ms": round(1000 * percentile(v, 0.95), 1),
                 "mean_ms": round(1000 * statistics.fmean(v), 1) if v else None}
             for k, v in sorted(latency.items())}
    total = sum(len(v) for v in latency.values())
    return {"models": models, "clients": clients, "wall_s": round(wall, 1), "kinds": kinds,
            "rps": round(total / wall, 2),
            "tokens_per_s": round(sum(tokens.values()) / wall, 1),
            "errors": dict(errors), "wrong_model": wrong_model[0],
            "edits_committed": sum(1 for e in edit_log if e.get("state") == "committed"),
            "ok": not errors and not wrong_model[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--edits", type=int, default=4)
    parser.add_argument("--edit-every", type=float, default=5.0)
    parser.add_argument("--until-commit", type=float, default=600.0,
                        help="bench.load's mix runs past --duration until the first edit "
                        "commits, at most this many seconds in all (0: stop at --duration)")
    parser.add_argument("--lone", type=int, default=15, help="lone-client requests per endpoint")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model")
    parser.add_argument("--threads", type=int, default=0,
                        help="OMP_NUM_THREADS of the service (0: torch's default); on a "
                        "machine other jobs load, 1 avoids OpenMP spinning against them")
    parser.add_argument("--device", default=None,
                        help="torch device of the service (cpu, cuda, cuda:1; default: the "
                        "service's own choice, CUDA where present)")
    parser.add_argument("--prefix-tokens", type=int, default=4096,
                        help="MODELEDIT_PREFIX_TOKENS (0: off)")
    parser.add_argument("--worker-nice", type=int, default=None,
                        help="MODELEDIT_WORKER_NICE (default: the service's)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not (1 <= args.clients <= 256 and 0 < args.duration <= 3600):
        parser.error("--clients 1..256, --duration up to 3600 s")
    report: dict[str, Any] = {"machine": machine(), "clients": args.clients,
                              "duration_s": args.duration, "tiny": args.tiny,
                              "threads": args.threads, "device": args.device or "default",
                              "worker_nice": args.worker_nice,
                              "prefix_tokens": args.prefix_tokens,
                              }
    with service(args.tiny, args.threads, args.device, args.worker_nice,
                 args.prefix_tokens) as url:
        report["lone"] = lone_client(url, args.lone)
        report["load"] = run_queries(url, args.clients, args.duration, args.edits,
                                     args.edit_every, 8, args.until_commit)
        report["openai_mix"] = openai_mix(url, args.clients, args.duration, args.edits,
                                          args.edit_every)
    load, lone, mix = report["load"], report["lone"], report["openai_mix"]
    rps = sum(e["rps"] for e in load["endpoints"].values())
    if lone["rps"]:
        report["vs_lone"] = round(rps / lone["rps"], 2)
    report["ok"] = load["ok"] and mix["ok"]
    out = write_json("openai_load", report, args.out)
    print(json.dumps(report, indent=2, default=str))
    rows = [["lone client (one request at a time)", lone["rps"], "",
             "/".join(str(e["p50_ms"]) for e in lone["endpoints"].values()), ""],
            [f"bench.load mix, {args.clients} clients", rps,
             sum(e["errors"] for e in load["endpoints"].values()),
             "/".join(str(e["p50_ms"]) for e in load["endpoints"].values()), load["ok"]],
            [f"/v1 mix {mix['models']} ({mix['tokens_per_s']} tok/s)", mix["rps"],
             sum(mix["errors"].values()),
             "/".join(f"{k}:{s['p50_ms']}" for k, s in mix["kinds"].items()), mix["ok"]]]
    print(table(["what", "req/s", "errors", "p50 (ms)", "ok"], rows))
    if "vs_lone" in report:
        print(f"the mix's requests/s over a lone client's: {report['vs_lone']}x")
    print(f"{'OK' if report['ok'] else 'FAILED'}; results in {out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
