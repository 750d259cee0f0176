"""Model configs by name: the shipped ``models/configs/*.json``, a config.json, a model
directory, or a model :func:`models.load.resolve` knows; and the default edited layers.

The plan needs only a config (shapes), never the weights, so this is how ``python -m
models.plan llama3-8b`` answers on a machine that has not downloaded Llama.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoConfig, PretrainedConfig

from models import catalog

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"


class ConfigNotFound(ValueError):
    """A model name or path that gives no config; the message lists what is accepted."""


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.json"))


def config_from_json(path: Path) -> PretrainedConfig:
    data = json.loads(path.read_text())
    model_type = data.pop("model_type", None)
    if not model_type:
        raise ConfigNotFound(f"{path} has no model_type; is it a Hugging Face config.json?")
    return AutoConfig.for_model(model_type, **data)


def load_config(name_or_path: str | None) -> tuple[str, PretrainedConfig]:
    """(display name, config) for a shipped config name, a config.json, a model directory,
    or a name :func:`models.load.resolve` knows (the default model, a .gguf, a cached HF id)."""
    from models.load import ModelNotAvailable, resolve

    if name_or_path and (CONFIGS_DIR / f"{name_or_path}.json").exists():
        return name_or_path, config_from_json(CONFIGS_DIR / f"{name_or_path}.json")
    path = Path(name_or_path or "").expanduser()
    if name_or_path and path.is_file() and path.suffix == ".json":
        return path.parent.name or path.stem, config_from_json(path)
    if name_or_path and (path / "config.json").is_file():
        return path.name, config_from_json(path / "config.json")
    try:
        name, source = resolve(name_or_path)
        if (Path(source) / "config.json").is_file():
            return name, config_from_json(Path(source) / "config.json")
        return name, AutoConfig.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, ModelNotAvailable) as exc:
        raise ConfigNotFound(
            f"no config for {name_or_path!r} on this machine ({exc}). Give one of "
            f"{', '.join(shipped_configs())}, a config.json, or a model directory."
        ) from exc


def layers_for_config(name: str, config: PretrainedConfig) -> tuple[int, ...]:
    """The preset's edited layers for ``name``, else the generic ones for its depth."""
    return catalog.default_layers(name, config.num_hidden_layers)
