"""Reading and writing activations with forward hooks, as context managers.

Every hook removes itself on exit, even on error, so a model is never left instrumented.
Blocks return a tensor or a tuple whose first item is the hidden state, depending on the
architecture and library version; these helpers hide that difference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from models.specs import block, mlp_out


class StopForward(Exception):
    """Raised by a hook to end a forward pass once the needed layers have run."""


def hidden_of(output: Any) -> torch.Tensor:
    """The hidden-state tensor of a block's output (tensor or tuple)."""
    return output[0] if isinstance(output, tuple) else output


def _with_hidden(output: Any, hidden: torch.Tensor) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@contextmanager
def capture(
    model: nn.Module,
    block_layers: tuple[int, ...] | list[int] = (),
    key_layers: tuple[int, ...] | list[int] = (),
    stop_after: int | None = None,
) -> Iterator[dict[str, dict[int, torch.Tensor]]]:
    """Record block outputs (``"block"``) and MLP-output inputs, i.e. keys (``"key"``).

    With ``stop_after``, the forward pass is aborted after that block (catch
    :class:`StopForward` around the call, or use :func:`run_until`).
    """
    seen: dict[str, dict[int, torch.Tensor]] = {"block": {}, "key": {}}
    handles = []

    def block_hook(layer: int) -> Callable:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            if layer in block_layers:
                seen["block"][layer] = hidden_of(output)
            if stop_after is not None and layer == stop_after:
                raise StopForward

        return hook

    def key_hook(layer: int) -> Callable:
        def hook(_module: nn.Module, args: tuple) -> None:
            seen["key"][layer] = args[0]

        return hook

    try:
        for layer in set(block_layers) | ({stop_after} if stop_after is not None else set()):
            handles.append(block(model, layer).register_forward_hook(block_hook(layer)))
        for layer in set(key_layers):
            handles.append(mlp_out(model, layer).register_forward_pre_hook(key_hook(layer)))
        yield seen
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def edit_block_output(
    model: nn.Module, layer: int, edit: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Replace block ``layer``'s hidden-state output by ``edit(hidden)`` during the context."""

    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        return _with_hidden(output, edit(hidden_of(output)))

    handle = block(model, layer).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def run_until(model: nn.Module, **inputs: Any) -> None:
    """Run a forward pass that a :class:`StopForward` hook may end early."""
    try:
        model(**inputs)
    except StopForward:
        pass


@contextmanager
def reuse_lower_blocks(model: nn.Module, layer: int, memo: dict[str, Any]) -> Iterator[None]:
    """Blocks below ``layer`` give the output they gave on the first pass under ``memo``.

    Why: when a loop changes nothing below block ``layer`` (the z optimisation adds its offset
    to that block's output, and the prefixes' keys and values are cached), running the lower
    blocks again every step recomputes the same tensors. The first pass records the output of
    block ``layer - 1``; later passes skip blocks ``0 .. layer - 1`` and hand that output on,
    so the result is bit for bit that of a full pass. Valid only while the inputs are the same.
    """
    if layer <= 0:
        yield
        return
    lower = [block(model, i) for i in range(layer)]
    if "output" not in memo:

        def record(_module: nn.Module, _args: Any, output: Any) -> None:
            memo["output"] = output

        handle = lower[-1].register_forward_hook(record)
        try:
            yield
        finally:
            handle.remove()
        return
    output = memo["output"]
    own = [module.__dict__.get("forward") for module in lower]  # e.g. accelerate's wrapper
    for module in lower:
        module.forward = lambda *_args, **_kwargs: output
    try:
        yield
    finally:
        for module, forward in zip(lower, own, strict=True):
            if forward is None:
                del module.forward
            else:
                module.forward = forward
