"""Where a model's tensors live, for models on one device and models sharded across several.

A model loaded with ``device_map`` (accelerate) has its blocks on different devices, and
accelerate's hooks move each module's inputs to that module's *execution device*. So the
editing code never asks "the model's device" (``next(model.parameters()).device`` is only
the device of the embeddings, and meaningless for a sharded model): token ids go to the
input embeddings' device, and every tensor that meets a module's output goes to the device
of that output.
"""

from __future__ import annotations

import torch
from torch import nn


def module_device(module: nn.Module) -> torch.device:
    """The device ``module`` computes on.

    Under accelerate's hooks that is the hook's execution device (the parameters may sit on
    ``meta`` when offloaded); otherwise the device of its first parameter or buffer.
    """
    hook = getattr(module, "_hf_hook", None)
    execution = getattr(hook, "execution_device", None)
    if execution is not None:
        return torch.device(execution) if not isinstance(execution, int) else torch.device("cuda", execution)
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def input_device(model: nn.Module) -> torch.device:
    """Where token ids (and attention masks) must be for a forward pass."""
    return module_device(model.get_input_embeddings())


def output_device(model: nn.Module) -> torch.device:
    """Where the logits come out (the unembedding's device)."""
    head = model.get_output_embeddings()
    return module_device(head) if head is not None else input_device(model)


def is_sharded(model: nn.Module) -> bool:
    """True when the model was placed with a ``device_map`` spanning several devices."""
    device_map = getattr(model, "hf_device_map", None) or {}
    return len({str(d) for d in device_map.values()}) > 1
