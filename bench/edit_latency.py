"""How long a one-fact edit takes to go live: the service as users run it, and the library.

    .venv/bin/python -m bench.edit_latency                 # library, then the service
    .venv/bin/python -m bench.edit_latency --skip-library  # the service alone

Service: ``python -m app serve`` on the default model with its default settings (the quality
gate measuring, as users get it), in a fresh data directory, the key statistics already cached
(run one edit first on a new machine). The first edit is submitted the moment ``/ready`` first
says ready; then ``--n`` one-fact edits of CounterFact dev records ``--start``... one at a
time, each submitted once the previous one committed; then one batch of the ``--n`` records
after them. Each edit is timed from the job's own timestamps (``created_at`` -> ``updated_at``
of the committed job), with the version's stage timings (z, solve, gate) beside it.

Library: ``Editor.edit`` alone on the same records, in a warm editor (one edit made before).

Prints a JSON report (also written to ``bench/results/edit_latency.json``) and a table.
Only loopback addresses are used; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from app.settings import Settings
from bench.common import table, write_json
from bench.service import Service, free_port, running, save_tiny_model
from editing.paths import shared_data_dir

JOB_TIMEOUT_S = 600
READY_TIMEOUT_S = 600
FACT_FIELDS = ("subject", "prompt", "target_new", "target_true")
"""What the README's example sends; ``--question`` adds the record's question."""


def load_facts(start: int, count: int, question: bool) -> list[dict[str, Any]]:
    records = json.loads((shared_data_dir() / "mcf_dev.json").read_text(encoding="utf-8"))
    fields = (*FACT_FIELDS, "question") if question else FACT_FIELDS
    return [{k: r[k] for k in fields if r.get(k)} for r in records[start:start + count]]


def seconds_between(start: str, end: str) -> float:
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "max": max(values), "min": min(values)}


# -- the library -------------------------------------------------------------------------------
def library_run(facts: list[dict[str, Any]], warm_fact: dict[str, Any],
                model: str | None) -> dict[str, Any]:
    """``Editor.edit`` of each fact alone, in an editor warmed by one edit."""
    from editing import Editor, EditRequest
    from models.load import cache_dir, load_model

    lm = load_model(model)
    editor = Editor(lm.model, lm.tokenizer, model_name=lm.name, cache_dir=cache_dir())
    editor.edit([EditRequest.from_record(warm_fact)])
    runs = []
    for fact in facts:
        started = time.perf_counter()
        result = editor.edit([EditRequest.from_record(fact)])
        runs.append({"seconds": time.perf_counter() - started,
                     "z_steps": result.diagnostics["z_steps"][0],
                     **result.diagnostics["timings"]})
    return {"runs": runs, "seconds": summary([r["seconds"] for r in runs])}


# -- the service -------------------------------------------------------------------------------
def wait_ready(client: httpx.Client, proc: Any) -> float:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not proc.alive():
            raise SystemExit(f"the service exited:\n{proc.log()}")
        try:
            if client.get("/ready", timeout=5).status_code == 200:
                return time.monotonic()
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"the service was not ready after {READY_TIMEOUT_S} s:\n{proc.log()}")


def edit_once(client: httpx.Client, facts: list[dict[str, Any]]) -> dict[str, Any]:
    """Submit one job, wait for its commit, return its timings."""
    posted = time.monotonic()
    response = client.post("/edits", json={"facts": facts})
    response.raise_for_status()
    job_id = response.json()["job_id"]
    deadline = posted + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = client.get(f"/edits/{job_id}").json()
        if job["state"] in ("committed", "failed"):
            break
        time.sleep(0.05)
    else:
        raise SystemExit(f"job {job_id} did not finish in {JOB_TIMEOUT_S} s")
    seen = time.monotonic() - posted
    if job["state"] != "committed":
        raise SystemExit(f"job {job_id} failed: {job.get('error')}")
    version = client.get(f"/versions/{job['version']}").json()
    timings = version.get("timings") or {}
    return {
        "seconds": seconds_between(job["created_at"], job["updated_at"]),
        "seen_s": seen,
        "version": job["version"],
        "z_steps": (version.get("diagnostics") or {}).get("z_steps"),
        **{k: timings[k] for k in ("targets_s", "solve_s", "compute_s", "gate_s") if k in timings},
    }


def service_run(facts: list[dict[str, Any]], first: dict[str, Any],
                batch: list[dict[str, Any]], model: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edit-latency-") as tmp:
        # the harness tunes a few polling settings for tests: put back what users get
        defaults = {f"MODELEDIT_{name.upper()}": str(Settings.model_fields[name].default)
                    for name in ("follow_poll_s", "heartbeat_s", "worker_block_ms")}
        service = Service(Path(tmp), model=model or "default", extra_env=defaults)
        with running(service):
            port = free_port()
            started = time.monotonic()
            proc = service.start("serve", port=port)
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
            ready_at = wait_ready(client, proc)
            first_run = edit_once(client, [first])
            one = [edit_once(client, [fact]) for fact in facts]
            batched = edit_once(client, batch)
            client.close()
    seconds = [r["seconds"] for r in one]
    gate_share = sum(r.get("gate_s", 0.0) for r in one) / sum(seconds)
    return {
        "ready_after_s": ready_at - started,
        "first": first_run,
        "one_fact": {"runs": one, "seconds": summary(seconds), "gate_share": gate_share},
        "batch": {"facts": len(batch), **batched},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", type=int, default=100, help="first mcf_dev record timed")
    parser.add_argument("--n", type=int, default=10, help="one-fact edits timed, one at a time")
    parser.add_argument("--question", action="store_true",
                        help="send each record's question too (the gate then measures chat efficacy)")
    parser.add_argument("--tiny", type=Path, default=None, metavar="DIR",
                        help="save the tiny test model in DIR and time that (a smoke run)")
    parser.add_argument("--skip-library", action="store_true")
    parser.add_argument("--skip-service", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    facts = load_facts(args.start - 1, 2 * args.n + 1, args.question)
    first, timed, batch = facts[0], facts[1:args.n + 1], facts[args.n + 1:]
    model = str(save_tiny_model(args.tiny)) if args.tiny else None
    report: dict[str, Any] = {"records": [args.start, args.start + args.n - 1], "model": model or "default"}
    if not args.skip_library:
        report["library"] = library_run(timed, first, model)
    if not args.skip_service:
        report["service"] = service_run(timed, first, batch, model)
    path = write_json("edit_latency", report, args.out)
    print(json.dumps(report, indent=2, default=str))
    rows = []
    if "library" in report:
        s = report["library"]["seconds"]
        rows.append(["Editor.edit, one fact", s["median"], s["max"], "", ""])
    if "service" in report:
        svc = report["service"]
        s = svc["one_fact"]["seconds"]
        rows.append(["service, one fact (created -> committed)", s["median"], s["max"],
                     svc["first"]["seconds"], f"{100 * svc['one_fact']['gate_share']:.0f} %"])
        rows.append([f"service, {svc['batch']['facts']}-fact batch", svc["batch"]["seconds"], "",
                     "", ""])
    print(table(["what", "median s", "max s", "first after /ready s", "gate share"], rows))
    print(f"written to {path}")
    return report


if __name__ == "__main__":
    main()
