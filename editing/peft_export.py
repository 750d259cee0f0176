"""Moved to :mod:`editing.export.peft`; this old path re-exports it for one release."""

from editing.export.peft import (
    CONFIG_NAME,
    VLLM_RANKS,
    WEIGHTS_NAME,
    LoraLayer,
    PeftAdapter,
    PeftExportError,
    adapter_config,
    adapter_tensors,
    export_peft_adapter,
    layer_factors,
    lora_layers,
    target_module,
    vllm_rank,
)

__all__ = [
    "CONFIG_NAME",
    "VLLM_RANKS",
    "WEIGHTS_NAME",
    "LoraLayer",
    "PeftAdapter",
    "PeftExportError",
    "adapter_config",
    "adapter_tensors",
    "export_peft_adapter",
    "layer_factors",
    "lora_layers",
    "target_module",
    "vllm_rank",
]
