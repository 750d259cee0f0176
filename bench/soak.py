"""Soak: SIGKILL the editor worker many times mid-job while jobs are queued.

The long variant of ``tests/e2e/test_faults.py::test_worker_and_api_sigkilled`` (run by hand;
the suite runs 3 kills x 6 jobs). On the tiny random model, with real processes and the test
Redis (a unique key prefix, never flushed). Each kill lands while the worker is paused at a
stage of a job (``app/worker/testing_hooks.py``); the seed picks the stage and the job:

    .venv/bin/python -m bench.soak                   # 10 kills x 10 jobs
    .venv/bin/python -m bench.soak --kills 20 --jobs 15 --seed 7

Afterwards every job must be committed exactly once, in submission order, with no partial
version, no temp or orphan file, and the weights the API serves equal to a from-scratch
replay of the committed deltas. Prints JSON and a table; exits 1 if anything failed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import table, write_json
from tests.e2e.faults import (
    WorkerKiller,
    check_committed_in_order,
    delta_dir_problems,
    replay_digest,
    submit,
)
from tests.e2e.harness import (
    TINY_HPARAMS,
    Service,
    running,
    save_tiny_model,
    wait_for,
    wait_ready,
)


def run(kills: int, jobs: int, seed: int, lock_ttl_s: float, root: Path) -> dict[str, Any]:
    """One soak run in ``root``; returns the report (``ok`` says whether every check held)."""
    model = save_tiny_model(root / "model")
    service = Service(root, str(model), extra_env={
        "MODELEDIT_HPARAMS": json.dumps(TINY_HPARAMS),
        "MODELEDIT_CACHE_DIR": str(root / "cache"),
        "MODELEDIT_LOCK_TTL_S": str(lock_ttl_s),
    })
    failures: list[str] = []
    report: dict[str, Any] = {"kills_asked": kills, "jobs": jobs, "seed": seed,
                              "lock_ttl_s": lock_ttl_s}
    started = time.monotonic()
    try:
        with running(service):
            killer = WorkerKiller(service, kills, seed)
            worker = killer.start()
            api = service.start("api")
            wait_ready(api, timeout=300)
            client = httpx.Client(base_url=api.url, timeout=60)
            job_ids = [submit(client, i) for i in range(jobs)]
            worker, kill_report = killer.run(worker, job_ids)
            report["kills"] = kill_report.kills
            report["restart_s"] = kill_report.restart_s
            report["drain_s"] = kill_report.drain_s
            try:
                versions = check_committed_in_order(service.data_dir, job_ids)
                report["versions"] = versions
            except AssertionError as exc:
                failures.append(f"order/exactly-once: {exc}")
                versions = []
            problems = delta_dir_problems(service.data_dir)
            if problems:
                failures.append(f"delta dir: {problems}")
            if versions:
                tip = versions[-1]
                wait_for(lambda: client.get("/ready").json()["version"] == tip, timeout=30,
                         what=f"the API to follow {tip}")
                served = client.get("/ready").json()["weights_sha256"]
                replayed = replay_digest(model, service.data_dir, tip)
                report["weights_match_replay"] = served == replayed
                if served != replayed:
                    failures.append(f"served {served[:12]} != replay {replayed[:12]}")
            store_jobs = [client.get(f"/edits/{j}").json() for j in job_ids]
            report["attempts"] = [j["attempts"] for j in store_jobs]
            client.close()
            service.stop_all()
    except AssertionError as exc:
        failures.append(str(exc))
    report["seconds"] = round(time.monotonic() - started, 1)
    report["failures"] = failures
    report["ok"] = not failures
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None, help="default: random, printed")
    parser.add_argument("--lock-ttl", type=float, default=3.0,
                        help="editor lock TTL; a killed worker's successor waits up to this")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results)")
    args = parser.parse_args(argv)
    if not (1 <= args.kills <= 100 and 1 <= args.jobs <= 200):
        parser.error("--kills must be 1..100 and --jobs 1..200")
    seed = args.seed if args.seed is not None else random.randrange(100_000)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        report = run(args.kills, args.jobs, seed, args.lock_ttl, Path(tmp))
    path = write_json("soak", report, args.out)
    print(json.dumps(report, indent=2))
    rows = [[k["kill"], k["job"], k["stage"], k["let_through"], k["job_state"], k["attempts"],
             report["restart_s"][i] if i < len(report.get("restart_s", [])) else ""]
            for i, k in enumerate(report.get("kills", []))]
    print(table(["kill", "job", "stage", "jobs let through", "job state at kill", "attempts",
                 "restart (s)"], rows))
    landed = sum(1 for k in report.get("kills", []) if k["job_state"] == "running")
    print(f"\n{len(rows)} kills ({landed} mid-edit), {args.jobs} jobs, seed {seed}: "
          f"{'OK' if report['ok'] else 'FAILED'} in {report['seconds']}s; "
          f"drain after last kill {report.get('drain_s')}s; results in {path}")
    for failure in report["failures"]:
        print("FAIL:", failure, file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
