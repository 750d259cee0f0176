"""Load: concurrent queries while edits commit, and a 100-job drain. Run by hand.

    .venv/bin/python -m bench.load                       # start a service on the default model
    .venv/bin/python -m bench.load --url http://127.0.0.1:8000 --clients 32 --duration 60
    .venv/bin/python -m bench.load --drain 100            # tiny model, 100 queued edit jobs

Queries: ``--clients`` threads alternate ``/generate`` and ``/score`` for ``--duration``
seconds, and on until the first edit has committed and answered (``--until-commit``),
while a thread submits ``--edits`` edit jobs, so the API switches versions under load.
What is checked, not just timed:

* every request answers 200 (anything else is counted as an error, with its status);
* every answer names the version that produced it, and that version exists;
* no answer comes from a half-switched model: one fixed prompt is asked throughout, so every
  answer tagged with version ``v`` must agree with every other answer tagged ``v``: equal
  greedy text, and log-probs within ``SCORE_TOL`` per token (batched rows differ from a lone
  row in the last float32 bits; a mixture of two versions' weights differs far more);
* each client sees versions only move forward (no rollback is made during the run).

Drain: ``--drain N`` queues N edit jobs at once and checks that all commit, exactly once, in
submission order (each version's parent is the previous job's version).

Only loopback URLs are accepted; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from bench.common import table, write_json

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
PROMPT = "The mother tongue of Danielle Darrieux is"
CANDIDATES = ["English", "French"]
EDIT_FACTS = [
    ("Danielle Darrieux", "The mother tongue of {} is", "English"),
    ("Toko Yasuda", "{} plays the", "piano"),
    ("Michel Rocard", "{} is a native speaker of", "Italian"),
    ("Apple A5", "{} was created by", "Microsoft"),
    ("Watts Humphrey", "{} attended", "Harvard University"),
    ("Montesquieu", "The native language of {} is", "Dutch"),
    ("Kenneth Dam", "{} works in the field of", "chemistry"),
    ("Thomas Joannes Stieltjes", "The mother tongue of {} is", "Spanish"),
]
MAX_REQUESTS_PER_CLIENT = 100_000
SCORE_TOL = 1e-4
"""Per token, how far two float32 scores of one version may differ (issue 23)."""


def disagree(endpoint: str, answers: set[str]) -> bool:
    """Answers of one version that a single version's weights cannot all have given."""
    if endpoint != "/score":
        return len(answers) > 1
    parsed = [json.loads(a) for a in answers]
    first = parsed[0]
    return any(abs(x["logprob"] - y["logprob"]) > SCORE_TOL * max(1, x["tokens"])
               or x["tokens"] != y["tokens"]
               for other in parsed[1:] for x, y in zip(first, other, strict=True))


def version_key(version: str) -> int:
    """``v12`` -> 12, for the forward-only check (ids are assigned in commit order)."""
    return int(version[1:]) if version[1:].isdigit() else -1


def check_loopback(url: str) -> str:
    host = urlparse(url).hostname or ""
    if host not in LOOPBACK:
        raise SystemExit(f"refusing {url}: this benchmark only talks to loopback addresses")
    return url.rstrip("/")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# -- queries under edits ------------------------------------------------------------------
@dataclass
class Results:
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    answers: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    """(endpoint, version) -> distinct answers; more than one means a half-switched model."""
    backwards: int = 0
    untagged: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def client_loop(url: str, index: int, stop: threading.Event, results: Results,
                max_new_tokens: int) -> None:
    """One client: alternate /generate and /score until ``stop`` (or the request cap)."""
    last = -1
    with httpx.Client(base_url=url, timeout=120) as client:
        for n in range(MAX_REQUESTS_PER_CLIENT):
            if stop.is_set():
                return
            endpoint = "/generate" if (n + index) % 2 == 0 else "/score"
            body: dict[str, Any] = (
                {"prompt": PROMPT, "max_new_tokens": max_new_tokens} if endpoint == "/generate"
                else {"prompt": PROMPT, "candidates": CANDIDATES})
            started = time.perf_counter()
            try:
                response = client.post(endpoint, json=body)
                status = str(response.status_code)
            except httpx.HTTPError as exc:
                response, status = None, type(exc).__name__
            elapsed = time.perf_counter() - started
            with results.lock:
                results.latency[endpoint].append(elapsed)
                if response is None or response.status_code != 200:
                    results.errors[f"{endpoint} {status}"] += 1
                    continue
                data = response.json()
                version = data.get("version")
                if not version:
                    results.untagged += 1
                    continue
                results.versions[version] += 1
                answer = data["text"] if endpoint == "/generate" else json.dumps(data["scores"])
                results.answers[(endpoint, version)].add(answer)
                if version_key(version) < last:
                    results.backwards += 1
                last = max(last, version_key(version))


def edit_loop(url: str, edits: int, every_s: float, stop: threading.Event,
              log: list[dict[str, Any]], committed: threading.Event | None = None) -> None:
    """Submit ``edits`` jobs one after another while the clients run; record commits (and set
    ``committed`` at the first)."""
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(edits):
            if stop.wait(every_s if i else 1.0):
                return
            subject, prompt, target = EDIT_FACTS[i % len(EDIT_FACTS)]
            response = client.post("/edits", json={"facts": [
                {"subject": subject, "prompt": prompt, "target_new": target}]})
            entry: dict[str, Any] = {"submitted": time.time(), "status": response.status_code}
            if response.status_code == 202:
                job_id = response.json()["job_id"]
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline and not stop.is_set():
                    job = client.get(f"/edits/{job_id}").json()
                    if job["state"] in ("committed", "failed"):
                        entry.update(state=job["state"], version=job["version"],
                                     seconds=round(time.time() - entry["submitted"], 2))
                        if committed is not None and job["state"] == "committed":
                            committed.set()
                        break
                    time.sleep(0.5)
                else:
                    entry["state"] = "unfinished when the run stopped"
            log.append(entry)


def run_queries(url: str, clients: int, duration: float, edits: int, every_s: float,
                max_new_tokens: int, until_commit_s: float = 0.0) -> dict[str, Any]:
    """The query run. With ``until_commit_s``, the clients keep going past ``duration`` until
    the first edit has committed and a query has been answered by it (at most that many
    seconds in all): a run in which no version switched under load checked nothing of the
    switch, and how long an edit takes under load depends on the machine, not on the bench."""
    results = Results()
    edit_log: list[dict[str, Any]] = []
    stop = threading.Event()
    committed = threading.Event()
    threads = [threading.Thread(target=client_loop, args=(url, i, stop, results,
                                                          max_new_tokens), daemon=True)
               for i in range(clients)]
    editor = threading.Thread(target=edit_loop,
                              args=(url, edits, every_s, stop, edit_log, committed), daemon=True)
    started = time.monotonic()
    for thread in [*threads, editor]:
        thread.start()
    time.sleep(duration)
    if edits and until_commit_s > duration:
        deadline = started + until_commit_s
        committed.wait(max(0.0, deadline - time.monotonic()))
        # then until an answer comes from the new version: the API follows the commit
        while len(results.versions) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    stop.set()
    for thread in [*threads, editor]:
        thread.join(180)
    wall = time.monotonic() - started
    with httpx.Client(base_url=url, timeout=60) as client:
        known = {v["id"] for v in client.get("/versions").json()["versions"]}
    mixed = {f"{e} {v}": len(a) for (e, v), a in results.answers.items() if disagree(e, a)}
    endpoints = {}
    for endpoint, values in sorted(results.latency.items()):
        endpoints[endpoint] = {
            "requests": len(values),
            "errors": sum(n for k, n in results.errors.items() if k.startswith(endpoint)),
            "rps": round(len(values) / wall, 2),
            "p50_ms": round(1000 * percentile(values, 0.50), 1),
            "p99_ms": round(1000 * percentile(values, 0.99), 1),
            "mean_ms": round(1000 * statistics.fmean(values), 1) if values else None,
        }
    unknown = sorted(set(results.versions) - known)
    report = {
        "url": url, "clients": clients, "duration_s": duration, "wall_s": round(wall, 1),
        "endpoints": endpoints, "errors": dict(results.errors),
        "versions_seen": dict(sorted(results.versions.items(), key=lambda kv: version_key(kv[0]))),
        "unknown_versions": unknown, "untagged": results.untagged,
        "inconsistent_answers": mixed, "went_backwards": results.backwards,
        "edits": edit_log,
        "edits_committed": sum(1 for e in edit_log if e.get("state") == "committed"),
    }
    # Without a commit inside the window the run never tested switching under load.
    switched = edits == 0 or (report["edits_committed"] >= 1 and len(results.versions) >= 2)
    report["switched_under_load"] = switched
    report["ok"] = (not results.errors and not unknown and not mixed and not results.untagged
                    and not results.backwards and switched)
    return report


# -- drain --------------------------------------------------------------------------------
def run_drain(url: str, n: int, timeout_s: float) -> dict[str, Any]:
    """Queue ``n`` jobs at once; all must commit in order, exactly once."""
    with httpx.Client(base_url=url, timeout=60) as client:
        before = len(client.get("/versions").json()["versions"])
        parent0 = client.get("/versions").json()["active"]
        started = time.monotonic()
        job_ids = []
        for i in range(n):
            subject, prompt, target = EDIT_FACTS[i % len(EDIT_FACTS)]
            response = client.post("/edits", json={
                "facts": [{"subject": f"{subject} {i}", "prompt": prompt, "target_new": target}],
                "idempotency_key": f"drain-{int(started)}-{i}"})
            if response.status_code != 202:
                raise SystemExit(f"job {i} refused: {response.status_code} {response.text}")
            job_ids.append(response.json()["job_id"])
        submit_s = time.monotonic() - started
        deadline = time.monotonic() + timeout_s
        jobs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            listing = {j["job_id"]: j for j in client.get("/edits", params={"limit": 1000}).json()}
            jobs = [listing.get(j, {"state": "missing"}) for j in job_ids]
            if all(j["state"] in ("committed", "failed") for j in jobs):
                break
            time.sleep(0.5)
        drain_s = time.monotonic() - started
        versions = {v["id"]: v for v in client.get("/versions").json()["versions"]}
    states = Counter(j["state"] for j in jobs)
    ids = [j.get("version") for j in jobs]
    parents = [versions[v]["parent"] if v in versions else None for v in ids]
    in_order = parents == [parent0, *ids[:-1]]
    report = {
        "url": url, "jobs": n, "states": dict(states), "submit_s": round(submit_s, 2),
        "drain_s": round(drain_s, 1), "jobs_per_s": round(n / drain_s, 2),
        "in_order": in_order, "distinct_versions": len(set(ids)),
        "new_versions": len(versions) - before,
        "attempts": dict(Counter(j.get("attempts") for j in jobs)),
    }
    report["ok"] = (states.get("committed") == n and in_order and len(set(ids)) == n
                    and report["new_versions"] == n)
    return report


# -- a service of our own -----------------------------------------------------------------
@contextmanager
def own_service(tiny: bool, extra_env: dict[str, str] | None = None,
                chat_template: str | None = None) -> Iterator[str]:
    """API + worker subprocesses in a temp dir (the test harness), for runs without --url;
    yields the API's URL and tears everything down (processes, Redis keys, files) after.
    ``chat_template`` gives the tiny model's tokenizer one (it has none of its own)."""
    from bench.service import TINY_HPARAMS, Service, running, save_tiny_model, wait_ready

    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        root = Path(tmp)
        env: dict[str, str] = dict(extra_env or {})
        model = "smollm2-135m"
        if tiny:
            model = str(save_tiny_model(root / "model"))
            if chat_template is not None:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(model)
                tokenizer.chat_template = chat_template
                tokenizer.save_pretrained(model)
            env |= {"MODELEDIT_HPARAMS": json.dumps(TINY_HPARAMS),
                    "MODELEDIT_CACHE_DIR": str(root / "cache")}
        env["MODELEDIT_RATE_LIMIT"] = "0"  # the drain submits faster than the default limit
        service = Service(root, model, extra_env=env)
        with running(service):
            service.start("worker")
            api = service.start("api")
            wait_ready(api, timeout=600)
            wait_worker_idle(service.prefix, timeout=600)
            assert api.url is not None
            try:
                yield api.url
            finally:
                service.stop_all()


def wait_worker_idle(prefix: str, timeout: float) -> None:
    """Until the worker reports itself idle: a worker still starting (loading, following the
    active version) takes CPU from whatever is measured first."""
    from app.queue import worker_info
    from bench.service import redis_client, wait_for

    client = redis_client()
    try:
        wait_for(lambda: (worker_info(client, prefix) or {}).get("state") == "idle", timeout,
                 "the worker to report itself idle")
    finally:
        client.close()


@contextmanager
def given_service(url: str) -> Iterator[str]:
    """A service someone else runs (loopback only): nothing to start or tear down."""
    yield check_loopback(url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running service (loopback only); default: start one")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--edits", type=int, default=4, help="edit jobs during the query run")
    parser.add_argument("--edit-every", type=float, default=5.0, help="seconds between edits")
    parser.add_argument("--until-commit", type=float, default=600.0,
                        help="keep the clients going past --duration until the first edit "
                        "commits, at most this many seconds in all (0: stop at --duration)")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--drain", type=int, default=0, help="queue this many jobs instead")
    parser.add_argument("--drain-timeout", type=float, default=900.0)
    parser.add_argument("--default-model-drain", action="store_true",
                        help="drain on the default model (slow) instead of the tiny one")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results)")
    args = parser.parse_args(argv)
    if not (1 <= args.clients <= 256 and 0 < args.duration <= 3600 and 0 <= args.drain <= 10_000
            and 0 <= args.edits <= 1000):
        parser.error("--clients 1..256, --duration up to 3600 s, --drain up to 10000")
    tiny = bool(args.drain) and not args.default_model_drain
    with given_service(args.url) if args.url else own_service(tiny) as url:
        if args.drain:
            report = run_drain(url, args.drain, args.drain_timeout)
            name = "load_drain"
            rows = [[report["jobs"], report["states"].get("committed", 0), report["in_order"],
                     report["new_versions"], report["submit_s"], report["drain_s"],
                     report["jobs_per_s"]]]
            headers = ["jobs", "committed", "in order", "new versions", "submit (s)",
                       "drain (s)", "jobs/s"]
        else:
            report = run_queries(url, args.clients, args.duration, args.edits,
                                 args.edit_every, args.max_new_tokens, args.until_commit)
            name = "load_queries"
            rows = [[e, s["requests"], s["errors"], s["rps"], s["p50_ms"], s["p99_ms"],
                     s["mean_ms"]] for e, s in report["endpoints"].items()]
            headers = ["endpoint", "requests", "errors", "req/s", "p50 (ms)", "p99 (ms)",
                       "mean (ms)"]
    path = write_json(name, report, args.out)
    print(json.dumps(report, indent=2, default=str))
    print(table(headers, rows))
    if not args.drain:
        print("versions seen:", report["versions_seen"])
    print(f"{'OK' if report['ok'] else 'FAILED'}; results in {path}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
