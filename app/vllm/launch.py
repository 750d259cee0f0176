"""``make serve-vllm``: vLLM on the base model and the service wired to it, both on loopback.

1. the base model is exported once as a plain HF checkpoint (``<data_dir>/exports/v0``), which
   is what vLLM loads;
2. vLLM starts on ``VLLM_PORT`` (8001) with a fresh API key that only the service is given,
   under a watchdog that restarts it if its engine dies;
3. ``python -m app serve`` starts on ``PORT`` (8000) with ``MODELEDIT_VLLM_URL`` set: it loads
   every committed version into vLLM as an adapter and proxies ``/v1/*`` to it.

The service does not wait for vLLM: edits work at once, queries answer 503 until vLLM is up.
Environment: ``VLLM_PYTHON`` (default ``.venv-vllm/bin/python``), ``VLLM_MAX_LORA_RANK``
(64), ``VLLM_MAX_LORAS`` (2), ``VLLM_KVCACHE_GIB`` (1), and the service's ``MODELEDIT_*``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

from app.settings import Settings
from app.vllm.process import VllmConfig, VllmProcess

log = logging.getLogger("app.vllm.launch")

MARKER = "modeledit_version.json"  # app.serving.export.MARKER, not imported: that loads torch


def export_base(settings: Settings, env: dict[str, str] | None = None) -> tuple[Path, str]:
    """The base model as an HF checkpoint for vLLM, exported if needed: ``(dir, model name)``."""
    out = settings.data_path / "exports" / "v0"
    if not (out / MARKER).exists():
        log.info("exporting the base model to %s for vLLM", out)
        subprocess.run([sys.executable, "-m", "app", "export", "v0", str(out), "--format", "hf"],
                       check=True, env=env or {**os.environ, **settings.child_env()})
    return out, json.loads((out / MARKER).read_text())["model"]


def vllm_config(settings: Settings, model_dir: Path, served_name: str) -> VllmConfig:
    """vLLM's start settings from the environment (see the module docstring)."""
    env = os.environ
    return VllmConfig(
        python=Path(env.get("VLLM_PYTHON", ".venv-vllm/bin/python")).absolute(),
        model_dir=model_dir,
        served_name=served_name,
        port=int(env.get("VLLM_PORT", "8001")),
        max_lora_rank=int(env.get("VLLM_MAX_LORA_RANK", settings.vllm_max_lora_rank)),
        max_loras=int(env.get("VLLM_MAX_LORAS", "2")),
        max_cpu_loras=settings.vllm_max_adapters,
        kv_cache_gib=int(env.get("VLLM_KVCACHE_GIB", "1")),
        log_path=settings.data_path / "vllm.log",
    )


def service_env(config: VllmConfig) -> dict[str, str]:
    """The service's environment: wired to this vLLM, on loopback."""
    return {
        **os.environ,
        "MODELEDIT_HOST": "127.0.0.1",
        "MODELEDIT_PORT": os.environ.get("PORT", os.environ.get("MODELEDIT_PORT", "8000")),
        "MODELEDIT_VLLM_URL": config.url,
        "MODELEDIT_VLLM_API_KEY": config.api_key,
        "MODELEDIT_VLLM_MAX_LORA_RANK": str(config.max_lora_rank),
    }


def main() -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per health check
    settings = Settings()
    python = Path(os.environ.get("VLLM_PYTHON", ".venv-vllm/bin/python"))
    if not python.exists():
        print(f"error: no vLLM environment at {python}: run `make vllm-env` first",
              file=sys.stderr)
        return 2
    model_dir, name = export_base(settings)
    config = vllm_config(settings, model_dir, name)
    vllm = VllmProcess(config)
    vllm.start()
    vllm.watch()
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service = subprocess.Popen([sys.executable, "-m", "app", "serve"], env=service_env(config))
    log.info("vLLM on %s (log %s), the service on http://127.0.0.1:%s", config.url,
             config.log_path, service_env(config)["MODELEDIT_PORT"])
    try:
        while not stop.wait(0.5):
            if service.poll() is not None:
                return service.returncode or 1
        return 0
    finally:
        if service.poll() is None:
            service.send_signal(signal.SIGTERM)
            service.wait(30)
        vllm.stop()


if __name__ == "__main__":
    sys.exit(main())
