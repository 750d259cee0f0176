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
import json
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

from pydantic import ValidationError

from app.flags import add_settings_flags, describe, settings_kwargs
from app.settings import Settings, SettingsSourceError

log = logging.getLogger("app")

EXPORT_FORMATS = ("hf", "peft")
"""Kept equal to ``app.serving.export.FORMATS`` (not imported: that would load torch for ``--help``)."""

STOP_TIMEOUT_S = 20.0
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_settings_flags(sub.add_parser("serve", help="Redis (if needed) + API + worker"))
    add_settings_flags(sub.add_parser("api", help="the HTTP API only"))
    add_settings_flags(sub.add_parser("worker", help="the editor worker only"))
    export = sub.add_parser(
        "export", help="write a version as a Hugging Face checkpoint or a PEFT LoRA adapter")
    add_settings_flags(export)
    export.add_argument("version", help="version id, e.g. v3 (see GET /versions)")
    export.add_argument("out_dir", type=Path, nargs="?", help="directory to create")
    export.add_argument("--out", type=Path, dest="out_flag", metavar="DIR",
                        help="directory to create "
                        "(same as the positional OUT_DIR)")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="hf",
                        help="hf: merged checkpoint (default); peft: LoRA adapter for "
                             "PEFT / vLLM --enable-lora")
    export.add_argument("--tol", type=float, default=0.0,
                        help="peft only: relative error allowed per layer for a lower rank "
                             "(truncated SVD); 0 (default) is exact")
    args = parser.parse_args(argv)
    if args.command == "export":
        _check_export_args(parser, args)
    return args


def _check_export_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One output directory, and ``--tol`` only where it means something."""
    if args.out_dir is not None and args.out_flag is not None and args.out_dir != args.out_flag:
        parser.error("give the output directory once (OUT_DIR or --out)")
    args.out_dir = args.out_dir or args.out_flag
    if args.out_dir is None:
        parser.error("the output directory is required (OUT_DIR or --out DIR)")
    if args.format != "peft" and args.tol != 0:
        parser.error("--tol applies to --format peft only; the hf export is always exact")
    if not 0 <= args.tol < 1:
        parser.error(f"--tol must be in [0, 1) (a relative error), got {args.tol}")


def settings_from(args: argparse.Namespace) -> Settings:
    """Flags over the environment over the env file over the secrets directory."""
    return Settings(**settings_kwargs(args))


def configure_logging(settings: Settings, process: str = "") -> None:
    from app.logs import configure_logging as configure

    configure(settings.log_level, settings.log_format, process)


def warn_if_exposed(settings: Settings) -> None:
    """Print what the tokens mean for the bound address; exit 2 where the start is refused
    (beyond loopback with no edit token and no MODELEDIT_ALLOW_UNAUTHENTICATED=1)."""
    from app.api.security import exposure

    found = exposure(settings)
    bar = "!" * 78
    if found.refusal is not None:
        print(f"{bar}\nERROR: {found.refusal}\n{bar}", file=sys.stderr, flush=True)
        raise SystemExit(2)
    for warning in found.warnings:
        print(f"{bar}\nWARNING: {warning}\n{bar}", file=sys.stderr, flush=True)
    for note in found.notes:
        log.warning(note)


# -- commands -------------------------------------------------------------------------------
def run_api(settings: Settings) -> None:
    import uvicorn

    from app.main import create_app

    warn_if_exposed(settings)
    app = create_app(settings)

    class Draining(uvicorn.Server):
        """On SIGTERM / SIGINT the engine drains first (new queries 503, /ready 503,
        in-flight ones get MODELEDIT_DRAIN_GRACE_S), then uvicorn shuts down as usual."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            services = getattr(app.state, "services", None)
            if services is not None and services.engine is not None:
                services.engine.drain(settings.drain_grace_s)
            super().handle_exit(sig, frame)

    Draining(uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.drain_grace_s) + 5,
        access_log=False,  # app.api.context logs each request with its request id
        # JSON: uvicorn's loggers propagate to the root handler instead of its own format
        **({"log_config": None} if settings.log_format == "json" else {}),
    )).run()


def run_worker(settings: Settings) -> None:
    from app.services import run_worker as run

    run(settings)


def run_export(settings: Settings, version: str, out_dir: Path, export_format: str = "hf",
               tol: float = 0.0) -> int:
    """Write the export; a version that cannot be exported is a message and exit code 2."""
    from app.services import load_parts
    from app.serving.delta_source import UnusableDelta
    from app.serving.export import (
        BaseNotExportable,
        export_peft_version,
        export_version,
        peft_base_name,
    )
    from app.store import NotFound
    from editing import PeftExportError

    parts = load_parts(settings)
    try:
        if export_format == "peft":
            path = export_peft_version(
                parts, version, out_dir, tol,
                base_model_name=lambda: peft_base_name(parts, settings.data_path))
        else:
            path = export_version(parts.runtime, parts.store, version, out_dir)
    except (NotFound, BaseNotExportable, UnusableDelta, PeftExportError,
            FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if export_format == "peft":
        info = json.loads((path / "modeledit_version.json").read_text())
        print(f"{version} written to {path} as a LoRA adapter of rank {info['r']} on layers "
              f"{info['layers']} (max relative error {info['max_rel_error']:.2g}) on the base "
              f"{info['base_model_name_or_path']}; load it with "
              f"AutoPeftModelForCausalLM.from_pretrained({str(path)!r}) or vLLM --enable-lora "
              f"--max-lora-rank {info['r']}")
    else:
        print(f"{version} written to {path}; load it with "
              f"AutoModelForCausalLM.from_pretrained({str(path)!r})")
    return 0


def _child_setup(parent: int) -> None:
    """In the child before exec: die with the supervisor, even if it is SIGKILLed."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def serve(settings: Settings) -> int:
    """Supervise Redis (if embedded), the worker and the API; return an exit code."""
    from app.queue.redis_server import ensure_redis

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
        _stop_children(children, settings.drain_grace_s + STOP_TIMEOUT_S)
        handle.stop()
        log.info("service stopped after %.1fs", time.perf_counter() - started)
    return code


def _stop_children(children: dict[str, subprocess.Popen[bytes]],
                   timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the API first (no new requests; queries in flight drain), then the worker;
    SIGKILL stragglers after ``timeout``."""
    for name in ("api", "worker"):
        proc = children.get(name)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for name, proc in children.items():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs; killing it", name, timeout)
            proc.kill()
            proc.wait(5)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else ""
            where = describe(name) if name in Settings.model_fields else name
            print(f"error: setting {where}: {error['msg']}", file=sys.stderr)
        return 2
    except SettingsSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings, args.command)
    if args.command == "serve":
        return serve(settings)
    if args.command == "api":
        run_api(settings)
    elif args.command == "worker":
        run_worker(settings)
    elif args.command == "export":
        return run_export(settings, args.version, args.out_dir, args.format, args.tol)
    return 0
