"""vLLM serving the versions: commit-to-served latency, adapter load time, proxy throughput.

Starts its own stack (the base exported as an HF checkpoint, vLLM's CPU build from
``.venv-vllm``, ``python -m app serve`` wired to it) in a temporary data directory, then:

1. **commit -> answered**: ``--edits`` edits through ``POST /edits``; for each, the time from
   the job's commit (the store's timestamp) to the first completion for ``active`` that vLLM
   answers with the new version's adapter (target: <= 2 s);
2. **adapter load time as the chain grows**: adapters of chains of 1, 10 and 100 rank-one
   versions (what a chain of one-fact edits exports to), written with the project's PEFT export
   and loaded with ``/v1/load_lora_adapter``; then the first completion that uses each (vLLM
   reads the weights then);
3. **throughput at ``--clients`` clients**: completions of ``--tokens`` tokens through the
   service's proxy, against vLLM directly, and against the embedded engine (``POST /generate``).

    make bench-vllm          # or: python -m bench.vllm_serving --edits 3 --requests 128
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from app.vllm.process import VllmConfig, VllmProcess
from bench.common import table, write_json

REPO = Path(__file__).resolve().parents[1]
PROMPT = "The mother tongue of Danielle Darrieux is"
FACTS = [
    {"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is",
     "target_new": "English", "target_true": "French"},
    {"subject": "Toko Yasuda", "prompt": "{} plays the", "target_new": "piano",
     "target_true": "guitar"},
    {"subject": "Autonomous University of Madrid", "prompt": "{} is located in",
     "target_new": "Sweden", "target_true": "Spain"},
]


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_stack(root: Path, vllm_python: Path, max_rank: int) -> tuple[VllmProcess, Any, str]:
    """Export the base, start vLLM and the service; ``(vllm, service process, service url)``."""
    env = {**os.environ, "MODELEDIT_DATA_DIR": str(root / "data"), "PYTHONPATH": str(REPO),
           "MODELEDIT_VLLM_POLL_S": "0.25", "MODELEDIT_VLLM_MAX_LORA_RANK": str(max_rank),
           "MODELEDIT_REDIS_PREFIX": f"bench-vllm-{os.getpid()}"}
    base = root / "data" / "exports" / "v0"
    subprocess.run([sys.executable, "-m", "app", "export", "v0", str(base)], env=env,
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    name = json.loads((base / "modeledit_version.json").read_text())["model"]
    vllm = VllmProcess(VllmConfig(python=vllm_python, model_dir=base, served_name=name,
                                  port=_free_port(), max_lora_rank=max_rank, max_cpu_loras=16,
                                  log_path=root / "vllm.log"))
    vllm.start()
    env |= {"MODELEDIT_VLLM_URL": vllm.config.url, "MODELEDIT_VLLM_API_KEY": vllm.config.api_key}
    port = _free_port()
    service = subprocess.Popen([sys.executable, "-m", "app", "serve", "--port", str(port)], env=env,
                               cwd=REPO, stdout=open(root / "service.log", "wb"),  # noqa: SIM115
                               stderr=subprocess.STDOUT)
    vllm.wait_ready(600)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return vllm, service, url


def commit_to_answer(http: httpx.Client, edits: int) -> list[dict[str, Any]]:
    rows = []
    for fact in FACTS[:edits]:
        job_id = http.post("/edits", json={"facts": [fact]}).json()["job_id"]
        while (job := http.get(f"/edits/{job_id}").json())["state"] not in ("committed", "failed"):
            time.sleep(0.05)
        committed = _stamp(job["updated_at"])
        prompt = fact["prompt"].replace("{}", fact["subject"])
        while True:
            answer = http.post("/v1/completions", json={"model": "active", "prompt": prompt,
                                                        "max_tokens": 1, "temperature": 0})
            if answer.status_code == 200 and answer.json()["model"].startswith(
                    job["version"] + "-"):
                break
            time.sleep(0.02)
        rows.append({"version": job["version"], "edit_s": committed - _stamp(job["created_at"]),
                     "commit_to_answer_s": time.time() - committed})
    return rows


def adapter_loads(vllm: VllmProcess, layers: list[int], out: Path,
                  chains: tuple[int, ...] = (1, 10, 100)) -> list[dict[str, Any]]:
    """Load time of the adapter of a chain of ``n`` rank-one versions, for each ``n``."""
    import torch
    from transformers import AutoConfig

    from editing.export.peft import export_peft_adapter
    from editing.weights.delta import LayerUpdate, WeightDelta

    config = AutoConfig.from_pretrained(vllm.config.model_dir)
    d_out, d_in = config.hidden_size, config.intermediate_size
    key = {"Authorization": f"Bearer {vllm.config.api_key}"}
    rows = []
    for n in chains:
        torch.manual_seed(n)
        deltas = [WeightDelta(updates={layer: LayerUpdate(torch.randn(d_out, 1) * 1e-3,
                                                          torch.randn(1, d_in) * 1e-3)
                                       for layer in layers}, model_type=config.model_type)
                  for _ in range(n)]
        started = time.perf_counter()
        adapter = export_peft_adapter(deltas, config, out / f"chain{n}")
        export_s = time.perf_counter() - started
        name = f"bench_chain{n}"  # not the sync's <version>-<digest12> shape: it would unload it
        started = time.perf_counter()
        response = httpx.post(vllm.config.url + "/v1/load_lora_adapter", headers=key, timeout=300,
                              json={"lora_name": name, "lora_path": str(adapter.path)})
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        first = httpx.post(vllm.config.url + "/v1/completions", headers=key, timeout=300,
                           json={"model": name, "prompt": PROMPT, "max_tokens": 1})
        rows.append({"versions": n, "rank": adapter.r, "export_s": export_s,
                     "load_s": load_s, "first_completion_s": time.perf_counter() - started,
                     "ok": response.status_code == 200 and first.status_code == 200})
        httpx.post(vllm.config.url + "/v1/unload_lora_adapter", headers=key,
                   json={"lora_name": name}, timeout=60)
    return rows


async def _throughput(url: str, path: str, bodies: list[dict[str, Any]], clients: int,
                      headers: dict[str, str]) -> dict[str, Any]:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    codes: list[int] = []

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            codes.append((await http.post(path, json=body)).status_code)

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {"requests": len(bodies), "ok": codes.count(200), "seconds": elapsed,
            "req_per_s": len(bodies) / elapsed}


def throughput(service: str, vllm: VllmProcess, adapter: str, requests: int, clients: int,
               tokens: int) -> list[dict[str, Any]]:
    prompts = [f"{PROMPT} (question {i})" for i in range(requests)]

    def completions(model: str) -> list[dict[str, Any]]:
        return [{"model": model, "prompt": p, "max_tokens": tokens, "temperature": 0,
                 "ignore_eos": True} for p in prompts]

    key = {"Authorization": f"Bearer {vllm.config.api_key}"}
    runs = {
        "vLLM directly": (vllm.config.url, "/v1/completions", completions(adapter), key),
        "service proxy -> vLLM": (service, "/v1/completions", completions("active"), {}),
        "embedded engine (/generate)": (service, "/generate", [
            {"prompt": p, "max_new_tokens": tokens} for p in prompts[: max(clients, 32)]], {}),
    }
    rows = []
    for label, (url, path, bodies, headers) in runs.items():
        result = asyncio.run(_throughput(url, path, bodies, clients, headers))
        rows.append({"engine": label, **result, "tokens_per_s": result["req_per_s"] * tokens})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edits", type=int, default=3, choices=range(1, len(FACTS) + 1))
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--max-lora-rank", type=int, default=128,
                        help="large enough for the 100-version chain's adapter")
    parser.add_argument("--vllm-python", type=Path,
                        default=Path(os.environ.get("VLLM_PYTHON", REPO / ".venv-vllm/bin/python")))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as tmp:
        root = Path(tmp)
        vllm, service, url = start_stack(root, args.vllm_python, args.max_lora_rank)
        try:
            with httpx.Client(base_url=url, timeout=600) as http:
                latency = commit_to_answer(http, args.edits)
                active = http.get("/versions").json()["active"]
                adapter = http.get(f"/versions/{active}").json()["serving"]["model"]
            info = json.loads((root / "data" / "vllm_adapters" / adapter /
                               "modeledit_version.json").read_text())
            loads = adapter_loads(vllm, info["layers"], root / "synthetic")
            served = throughput(url, vllm, adapter, args.requests, args.clients, args.tokens)
        finally:
            service.terminate()
            service.wait(60)
            vllm.stop()
    path = write_json("vllm_serving", {"args": {k: str(v) for k, v in vars(args).items()},
                                       "commit_to_answer": latency, "adapter_load": loads,
                                       "throughput": served}, args.out)
    print(table(["version", "edit s", "commit -> vLLM answers s"],
                [[r["version"], r["edit_s"], r["commit_to_answer_s"]] for r in latency]))
    print(table(["versions in chain", "rank", "export s", "load s", "first completion s", "ok"],
                [[r["versions"], r["rank"], r["export_s"], r["load_s"],
                  r["first_completion_s"], r["ok"]] for r in loads]))
    print(table(["engine", "requests", "ok", "s", "req/s", "tokens/s"],
                [[r["engine"], r["requests"], r["ok"], r["seconds"], r["req_per_s"],
                  r["tokens_per_s"]] for r in served]))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
