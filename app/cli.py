"""``python -m app serve | api | worker | export``.

``serve`` is the one-command start: it finds or starts a Redis (``REDIS_URL`` if it answers,
else an embedded server in the data directory), then runs the API and the worker as child
processes and supervises them. No orphans: children live in their own process group and get
SIGTERM from the supervisor on Ctrl-C/SIGTERM, and the kernel sends them SIGTERM
(``PR_SET_PDEATHSIG``) if the supervisor itself is killed; the embedded Redis is stopped last.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from app.settings import Settings

log = logging.getLogger("app")

STOP_TIMEOUT_S = 20.0
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _add_common(parser: argparse.ArgumentParser, network: bool = True) -> None:
    parser.add_argument("--data-dir", help="data directory (MODELEDIT_DATA_DIR, default ./data)")
    parser.add_argument("--model", help="model to edit (MODELEDIT_MODEL, default smollm2-135m)")
    parser.add_argument("--redis-url", help="Redis URL (REDIS_URL; default: embedded server)")
    if network:
        parser.add_argument("--host", help="bind address (MODELEDIT_HOST, default 127.0.0.1)")
        parser.add_argument("--port", type=int, help="port (MODELEDIT_PORT, default 8000)")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_common(sub.add_parser("serve", help="Redis (if needed) + API + worker"))
    _add_common(sub.add_parser("api", help="the HTTP API only"))
    _add_common(sub.add_parser("worker", help="the editor worker only"), network=False)
    export = sub.add_parser("export", help="write a version as a Hugging Face checkpoint")
    _add_common(export, network=False)
    export.add_argument("version", help="version id, e.g. v3 (see GET /versions)")
    export.add_argument("out_dir", type=Path, help="directory to create")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    """Environment first, flags override."""
    overrides: dict[str, Any] = {}
    for name in ("data_dir", "model", "redis_url", "host", "port"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
    )


def warn_if_exposed(settings: Settings) -> None:
    if settings.exposed_without_token():
        bar = "!" * 78
        print(
            f"{bar}\nWARNING: binding to {settings.host} with no MODELEDIT_API_TOKEN: anyone "
            f"who can reach this port can rewrite the model.\nSet MODELEDIT_API_TOKEN (and "
            f"MODELEDIT_READ_TOKEN) or bind to 127.0.0.1.\n{bar}",
            file=sys.stderr,
            flush=True,
        )


# -- commands -------------------------------------------------------------------------------
def run_api(settings: Settings) -> None:
    import uvicorn

    from app.main import create_app

    warn_if_exposed(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=10,
    )


def run_worker(settings: Settings) -> None:
    from app.worker import run_worker as run

    run(settings)


def run_export(settings: Settings, version: str, out_dir: Path) -> None:
    from app.export import export_version
    from app.services import load_parts

    parts = load_parts(settings)
    path = export_version(parts.runtime, parts.store, version, out_dir)
    print(f"{version} written to {path}; load it with "
          f"AutoModelForCausalLM.from_pretrained({str(path)!r})")


def _child_setup(parent: int) -> None:
    """In the child before exec: die with the supervisor, even if it is SIGKILLed."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def serve(settings: Settings) -> int:
    """Supervise Redis (if embedded), the worker and the API; return an exit code."""
    from app.redis_server import ensure_redis

    warn_if_exposed(settings)
    started = time.perf_counter()
    handle = ensure_redis(settings.redis_url, settings.data_path)
    env = {**os.environ, **settings.child_env(), "REDIS_URL": handle.url}
    parent = os.getpid()
    children: dict[str, subprocess.Popen[bytes]] = {}
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping the service", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    try:
        for name in ("worker", "api"):
            children[name] = subprocess.Popen(
                [sys.executable, "-m", "app", name], env=env, start_new_session=True,
                preexec_fn=lambda: _child_setup(parent),
            )
        log.info("service starting: redis %s (%s), worker pid %d, api pid %d on http://%s:%d",
                 "embedded" if handle.embedded else "external",
                 f"{handle.start_s * 1000:.0f} ms" if handle.owned else "running",
                 children["worker"].pid, children["api"].pid, settings.host, settings.port)
        while not stop.wait(0.2):
            for name, proc in children.items():
                if proc.poll() is not None:
                    log.error("%s exited with code %s; stopping the service", name,
                              proc.returncode)
                    code = proc.returncode or 1
                    stop.set()
    finally:
        _stop_children(children)
        handle.stop()
        log.info("service stopped after %.1fs", time.perf_counter() - started)
    return code


def _stop_children(children: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM the API first (no new requests), then the worker; SIGKILL stragglers."""
    for name in ("api", "worker"):
        proc = children.get(name)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for name, proc in children.items():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs; killing it", name, STOP_TIMEOUT_S)
            proc.kill()
            proc.wait(5)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    settings = settings_from(args)
    configure_logging(settings)
    if args.command == "serve":
        return serve(settings)
    if args.command == "api":
        run_api(settings)
    elif args.command == "worker":
        run_worker(settings)
    elif args.command == "export":
        run_export(settings, args.version, args.out_dir)
    return 0
