"""Command-line options shared by ``python -m editing edit|precompute-z|evaluate``.

Its own module so that ``editing/cli.py`` (which registers the ``evaluate`` sub-command) and
``editing/evaluate/cli.py`` (which needs the model options) both import it and not each other.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from editing.editor import Editor
from editing.hparams import SECTIONS, EditHparams, retired_name_error
from editing.methods import get_method, method_names
from editing.presets import preset_for
from editing.solve.stats import Corpus
from editing.targets.zcache import ZCache
from models.catalog import parse_layers
from models.device_map import parse_device_map


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that loads a model and edits it."""
    parser.add_argument("--model", default=None, help="HF id, local path or .gguf (default: SmolLM2-135M)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    parser.add_argument("--dtype", default=None, choices=["float32", "fp32", "bf16", "bfloat16", "fp16", "float16"],
                        help="weights dtype: float32 (default), bf16 or fp16. Half precision runs "
                             "on the CPU too, slower there than on a GPU (bf16 is fast only on "
                             "CPUs with AVX512-BF16 or AMX)")
    parser.add_argument("--device-map", default=None, metavar="MAP", type=device_map_arg,
                        help="shard the model with accelerate: auto, balanced, sequential, or a "
                             "JSON map {module: device}; for models larger than one GPU "
                             "(--device is then ignored)")
    parser.add_argument("--method", default="fe", choices=method_names(),
                        help="editing method (default fe): " + "; ".join(
                            f"{name}: {get_method(name).description}" for name in method_names()))
    parser.add_argument("--layers", default=None, help="edited layers, e.g. 4-8 or 4,5,6 (default: preset)")
    parser.add_argument("--hparam", action="append", default=[], metavar="KEY=VALUE",
                        help="override a hyper-parameter, e.g. --hparam z_steps=30 or "
                             "--hparam chat.name_kl_factor=4 (repeatable)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="statistics/template cache (default: ~/.cache/modeledit)")
    parser.add_argument("--corpus", default=None,
                        help="covariance corpus: .txt, .jsonl, hf:<name> or model-samples (default: WikiText-2)")


def device_map_arg(text: str) -> str | dict[str, str | int] | None:
    """``--device-map`` parsed, with its error as a usage message."""
    try:
        return parse_device_map(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def parse_overrides(args: argparse.Namespace, preset: EditHparams) -> dict[str, Any]:
    """``--layers`` and each ``--hparam KEY=VALUE``, typed like the preset's fields (public
    names; a sub-configuration's field as ``chat.name_kl_factor``)."""
    changes: dict[str, Any] = {}
    if args.layers:
        changes["layers"] = parse_layers(args.layers)
    for item in args.hparam:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        holder = getattr(preset, section) if dot and section in SECTIONS else preset
        name = name if dot else key
        if not sep or name in SECTIONS or name not in holder.__dataclass_fields__:
            known = sorted(f for f in EditHparams.__dataclass_fields__ if f not in SECTIONS)
            known += [f"{s}.{f}" for s, kind in SECTIONS.items() for f in kind.__dataclass_fields__]
            raise SystemExit(f"--hparam {item!r}: " + (retired_name_error(key) or
                             f"expected KEY=VALUE with KEY one of {known}"))
        current = getattr(holder, name)
        if isinstance(current, bool):
            changes[key] = raw.lower() in ("1", "true", "yes")
        elif isinstance(current, tuple):
            changes[key] = parse_layers(raw) if name == "layers" else tuple(raw.split(","))
        elif isinstance(current, str) or current is None:  # choices and the method: checked later
            changes[key] = raw
        else:
            changes[key] = type(current)(raw)
    return changes


def build_hparams(args: argparse.Namespace, preset: EditHparams) -> EditHparams:
    """The preset, then ``--method``, ``--layers`` and each ``--hparam`` override."""
    hp = preset.with_method(args.method)
    try:
        return hp.with_overrides(parse_overrides(args, hp))
    except ValueError as exc:
        raise SystemExit(f"--hparam: {exc}") from None


def make_editor(args: argparse.Namespace) -> tuple[Any, Editor]:
    """Load the model and build an Editor from the command-line options."""
    from models.load import cache_dir, load_model  # loading pulls in the model stack: only when run

    lm = load_model(args.model, device=args.device, dtype=args.dtype,
                    device_map=args.device_map)
    hp = build_hparams(args, preset_for(lm.name, lm.model))
    cache = args.cache_dir or cache_dir()
    z_cache = ZCache(Path(getattr(args, "z_cache", None) or cache / "z"))
    corpus = Corpus(args.corpus) if args.corpus else None
    editor = Editor(lm.model, lm.tokenizer, hparams=hp, model_name=lm.name, cache_dir=cache,
                    corpus=corpus, z_cache=z_cache)
    return lm, editor
