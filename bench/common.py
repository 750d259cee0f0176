"""Helpers shared by the benchmarks: output files, tables, the default setup."""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from editing.methods import get_method, method_names

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "processor": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def write_json(name: str, payload: dict[str, Any], out: Path | None = None) -> Path:
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=str))
    return path


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table (numbers rounded to 2 decimals)."""

    def cell(value: Any) -> str:
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def method_list(text: str) -> list[str]:
    """``--methods fe,memit``: registered method names (the registry's error otherwise)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        try:
            get_method(name)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc
    return names


def add_methods_arg(parser: argparse.ArgumentParser, default: str = "fe,memit") -> None:
    """``--methods``, registered method names, comma-separated."""
    parser.add_argument("--methods", default=default, type=method_list,
                        help="registered methods, comma-separated (default %(default)s)")


def add_method_arg(parser: argparse.ArgumentParser) -> None:
    """``--method``, one of the registered methods (default fe)."""
    parser.add_argument("--method", default="fe", choices=method_names())


def add_hparam_arg(parser: argparse.ArgumentParser) -> None:
    """``--hparam KEY=JSON`` (repeatable): a preset hyper-parameter override, JSON-typed."""
    parser.add_argument("--hparam", action="append", default=[], metavar="KEY=JSON",
                        help="override a preset hyper-parameter, e.g. z_lr=0.1 or layers=[4,5,6]")


def parse_hparams(parser: argparse.ArgumentParser, items: Sequence[str]) -> dict[str, Any]:
    """The ``--hparam`` overrides as a dict; a clear parser error for text that is not JSON."""
    try:
        return {k: json.loads(v) for k, _, v in (item.partition("=") for item in items)}
    except json.JSONDecodeError as exc:
        parser.error(f"--hparam wants KEY=JSON (e.g. layers=[4,5,6] or z_lr=0.1): {exc}")
