"""Saturation: concurrent chat completions and ``/generate`` while ``/health`` is probed.

    .venv/bin/python -m bench.saturation                       # issue 32's figures (minutes)
    .venv/bin/python -m bench.saturation --tiny --mix 4:4:8 --abandon-clients 2 \\
        --abandon-tokens 16 --lone 2                          # a smoke run (seconds)

Starts its own service (API + worker, default model; loopback only, like ``bench.load``) or
uses ``--url`` (loopback only). Each ``--mix CHAT:GENERATE:TOKENS`` sends that many
concurrent non-streamed chat completions and ``POST /generate`` calls (one request per
client, ``TOKENS`` new tokens each) while one prober asks ``/health`` every 50 ms and
``/versions`` every 250 ms, until every client has its answer. Reported per mix: status
counts, latency percentiles per kind, ``/health`` p50 / p95 / max, ``/versions`` max, and
the issue's targets (every answer 200, or 429/503 with ``Retry-After``; >= 90 % 200;
``/health`` p95 <= 100 ms and max <= 1 s; ``/versions`` max <= 2 s).

The abandonment check: the median of ``--lone`` lone chat completions, then
``--abandon-clients`` clients that give up after ``--abandon-after`` s on ``n``=8 requests of
``--abandon-tokens`` tokens, then, ``--abandon-wait`` s later, one lone request again, which
must take at most 1.5 x the median + 0.5 s (the abandoned rows were freed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import httpx

from bench.common import machine, table, write_json
from bench.load import PROMPT, check_loopback, own_service, percentile
from bench.openai_load import CHAT, CHATML

DEFAULT_MIXES = ["32:48:64", "64:16:128"]
PROBE_HEALTH_S, PROBE_VERSIONS_S = 0.05, 0.25


def _ms(values: list[float], q: float) -> float | None:
    return round(1000 * percentile(values, q), 1) if values else None


def _chat(client: httpx.Client, tokens: int, n: int = 1) -> httpx.Response:
    return client.post("/v1/chat/completions", json={
        "model": "active", "messages": CHAT, "max_tokens": tokens, "n": n,
        "temperature": 0, "ignore_eos": True})


def _generate(client: httpx.Client, tokens: int) -> httpx.Response:
    return client.post("/generate", json={"prompt": PROMPT, "max_new_tokens": tokens})


def run_mix(url: str, chats: int, generates: int, tokens: int) -> dict[str, Any]:
    """One request per client, all at once, with /health and /versions probed meanwhile."""
    status: Counter[str] = Counter()
    latency: dict[str, list[float]] = defaultdict(list)
    bad_refusals: list[str] = []
    lock = threading.Lock()
    done = threading.Event()
    start = threading.Barrier(chats + generates + 1)

    def client(kind: str) -> None:
        with httpx.Client(base_url=url, timeout=900) as http:
            start.wait()
            began = time.perf_counter()
            try:
                response = _chat(http, tokens) if kind == "chat" else _generate(http, tokens)
                code: int | str = response.status_code
                refused_badly = code in (429, 503) and "retry-after" not in response.headers
            except httpx.HTTPError as exc:
                code, refused_badly = type(exc).__name__, False
            with lock:
                latency[kind].append(time.perf_counter() - began)
                status[f"{kind} {code}"] += 1
                if refused_badly or code not in (200, 429, 503):
                    bad_refusals.append(f"{kind} {code}")

    probes: dict[str, list[float]] = {"health": [], "versions": []}
    probe_errors: Counter[str] = Counter()

    def prober() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            next_versions = 0.0
            while not done.is_set():
                for name, path in (("health", "/health"), ("versions", "/versions")):
                    if name == "versions" and time.monotonic() < next_versions:
                        continue
                    began = time.perf_counter()
                    try:
                        ok = http.get(path).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    probes[name].append(time.perf_counter() - began)
                    if not ok:
                        probe_errors[name] += 1
                    if name == "versions":
                        next_versions = time.monotonic() + PROBE_VERSIONS_S
                done.wait(PROBE_HEALTH_S)

    threads = [threading.Thread(target=client, args=(kind,), daemon=True)
               for kind in ["chat"] * chats + ["generate"] * generates]
    probe = threading.Thread(target=prober, daemon=True)
    for t in threads:
        t.start()
    probe.start()
    began = time.perf_counter()
    start.wait()
    for t in threads:
        t.join(1800)
    wall = time.perf_counter() - began
    done.set()
    probe.join(120)
    total = chats + generates
    ok = sum(v for k, v in status.items() if k.endswith(" 200"))
    health, versions = probes["health"], probes["versions"]
    result = {
        "mix": f"{chats} chat + {generates} /generate x {tokens} tokens", "wall_s": round(wall, 1),
        "status": dict(sorted(status.items())), "share_200": round(ok / total, 3) if total else None,
        "latency_ms": {k: {"p50": _ms(v, 0.5), "p95": _ms(v, 0.95), "max": _ms(v, 1.0)}
                       for k, v in sorted(latency.items())},
        "health_ms": {"p50": _ms(health, 0.5), "p95": _ms(health, 0.95), "max": _ms(health, 1.0),
                      "probes": len(health)},
        "versions_ms": {"max": _ms(versions, 1.0), "probes": len(versions)},
        "probe_errors": dict(probe_errors), "bad_answers": bad_refusals,
    }
    result["targets"] = {
        "answers_200_or_retry_after": not bad_refusals,
        "at_least_90pct_200": bool(total) and ok / total >= 0.9,
        "health_p95_le_100ms": bool(health) and percentile(health, 0.95) <= 0.1,
        "health_max_le_1s": bool(health) and max(health) <= 1.0,
        "versions_max_le_2s": bool(versions) and max(versions) <= 2.0,
        "probes_answered": not probe_errors,
    }
    result["ok"] = all(result["targets"].values())
    return result


def lone(url: str, tokens: int) -> float:
    with httpx.Client(base_url=url, timeout=900) as http:
        began = time.perf_counter()
        _chat(http, tokens).raise_for_status()
        return time.perf_counter() - began


def run_abandonment(url: str, clients: int, n: int, tokens: int, after_s: float, wait_s: float,
                    samples: int, lone_tokens: int) -> dict[str, Any]:
    """Lone latency before; clients that give up; lone latency ``wait_s`` later."""
    lone(url, lone_tokens)  # warm
    before = [lone(url, lone_tokens) for _ in range(samples)]
    median = statistics.median(before)
    outcomes: Counter[str] = Counter()

    def quitter() -> None:
        with httpx.Client(base_url=url, timeout=after_s) as http:
            try:
                outcomes[str(_chat(http, tokens, n).status_code)] += 1
            except httpx.TimeoutException:
                outcomes["gave up"] += 1
            except httpx.HTTPError as exc:
                outcomes[type(exc).__name__] += 1

    threads = [threading.Thread(target=quitter, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(after_s + 120)
    time.sleep(wait_s)  # the benchmark's own pacing, as the issue states the check
    after = lone(url, lone_tokens)
    bound = 1.5 * median + 0.5
    return {"clients": clients, "n": n, "tokens": tokens, "gave_up_after_s": after_s,
            "outcomes": dict(outcomes), "lone_tokens": lone_tokens,
            "lone_before_ms": [round(1000 * t, 1) for t in before],
            "lone_median_ms": round(1000 * median, 1), "lone_after_ms": round(1000 * after, 1),
            "bound_ms": round(1000 * bound, 1), "ok": after <= bound}


def _mix(text: str) -> tuple[int, int, int]:
    try:
        chats, generates, tokens = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError("a mix is CHAT:GENERATE:TOKENS, e.g. 32:48:64") from None
    if not (0 <= chats <= 512 and 0 <= generates <= 512 and 1 <= tokens <= 512
            and chats + generates):
        raise argparse.ArgumentTypeError("up to 512 of each kind, 1..512 tokens")
    return chats, generates, tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mix", type=_mix, action="append", default=None,
                        help=f"CHAT:GENERATE:TOKENS, repeatable (default {DEFAULT_MIXES})")
    parser.add_argument("--abandon-clients", type=int, default=16, help="0: no abandonment check")
    parser.add_argument("--abandon-n", type=int, default=8)
    parser.add_argument("--abandon-tokens", type=int, default=256)
    parser.add_argument("--abandon-after", type=float, default=1.0)
    parser.add_argument("--abandon-wait", type=float, default=5.0)
    parser.add_argument("--lone", type=int, default=5, help="lone requests for the median")
    parser.add_argument("--lone-tokens", type=int, default=64)
    parser.add_argument("--tiny", action="store_true", help="the tiny test model")
    parser.add_argument("--url", default=None, help="a running service (loopback only)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    mixes = args.mix or [_mix(m) for m in DEFAULT_MIXES]
    if args.url:
        check_loopback(args.url)
    service: AbstractContextManager[str] = (
        nullcontext(args.url) if args.url else own_service(
            args.tiny, None, chat_template=CHATML if args.tiny
            else None))
    report: dict[str, Any] = {"machine": machine(), "tiny": args.tiny, "mixes": []}
    with service as url:
        for chats, generates, tokens in mixes:
            report["mixes"].append(run_mix(url, chats, generates, tokens))
        if args.abandon_clients:
            report["abandonment"] = run_abandonment(
                url, args.abandon_clients, args.abandon_n, args.abandon_tokens,
                args.abandon_after, args.abandon_wait, args.lone, args.lone_tokens)
    report["ok"] = (all(m["ok"] for m in report["mixes"])
                    and report.get("abandonment", {"ok": True})["ok"])
    out = write_json("saturation", report, args.out)
    print(json.dumps(report, indent=2, default=str))
    rows = [[m["mix"], " ".join(f"{k}:{v}" for k, v in m["status"].items()),
             "/".join(str(s["p50"]) for s in m["latency_ms"].values()),
             f"{m['health_ms']['p50']}/{m['health_ms']['p95']}/{m['health_ms']['max']}",
             m["versions_ms"]["max"], m["ok"]] for m in report["mixes"]]
    print(table(["mix", "status", "p50 ms (chat/gen)", "/health p50/p95/max ms",
                 "/versions max ms", "ok"], rows))
    if "abandonment" in report:
        a = report["abandonment"]
        print(f"abandonment: lone median {a['lone_median_ms']} ms, after {a['lone_after_ms']} ms "
              f"(bound {a['bound_ms']} ms): {'OK' if a['ok'] else 'FAILED'}")
    print(f"{'OK' if report['ok'] else 'FAILED'}; results in {out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
