"""Locate-then-edit for causal LMs: FE (forward replay, the default) and MEMIT baselines.

Pure torch + transformers: no web, no Redis, no global state. Typical use::

    from models.load import load_model
    from editing import Editor, EditRequest

    lm = load_model()                       # the default SmolLM2-135M-Instruct
    editor = Editor(lm.model, lm.tokenizer) # preset hyper-parameters for the model
    result = editor.edit([EditRequest("Danielle Darrieux", "The mother tongue of {} is", "English")])
    result.delta.apply(lm.model)            # or keep result.delta.save("edit.safetensors")

This module is the library's one public surface: everything a program built on it needs (the
service included) is importable from ``editing`` itself, and the folders behind it may be
reorganised without breaking their users. Names load on first use, so ``from editing import
EditHparams`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, tuple[str, str]] = {
    # editing an edit
    "Editor": ("editing.editor", "Editor"),
    "EditorCaches": ("editing.editor", "EditorCaches"),
    "EditResult": ("editing.editor", "EditResult"),
    "EditRequest": ("editing.requests", "EditRequest"),
    "InvalidEditRequest": ("editing.requests", "InvalidEditRequest"),
    "EditState": ("editing.state", "EditState"),
    # hyper-parameters, presets and methods
    "EditHparams": ("editing.hparams", "EditHparams"),
    "STORED_NAMES": ("editing.hparams", "STORED_NAMES"),
    "retired_name_error": ("editing.hparams", "retired_name_error"),
    "preset_for": ("editing.presets", "preset_for"),
    "STRENGTHS": ("editing.strength", "STRENGTHS"),
    "with_strength": ("editing.strength", "with_strength"),
    "method_names": ("editing.methods", "method_names"),
    "get_method": ("editing.methods", "get_method"),
    "is_null_space": ("editing.methods", "is_null_space"),
    # deltas and the digests that identify weights
    "WeightDelta": ("editing.weights.delta", "WeightDelta"),
    "LayerUpdate": ("editing.weights.delta", "LayerUpdate"),
    "BaseWeights": ("editing.weights.delta", "BaseWeights"),
    "DeltaError": ("editing.weights.delta", "DeltaError"),
    "model_fingerprint": ("editing.weights.fingerprint", "model_fingerprint"),
    "weights_digest": ("editing.weights.fingerprint", "weights_digest"),
    "merged_weights": ("editing.weights.merged", "merged_weights"),
    "merged_weights_digest": ("editing.weights.merged", "merged_weights_digest"),
    # tokenisation and memory
    "prompt_ids": ("editing.forward.tokens", "prompt_ids"),
    "continuation_ids": ("editing.forward.tokens", "continuation_ids"),
    "eval_batch_for": ("editing.forward.memory", "eval_batch_for"),
    # evaluation, the quality gate's figures, data
    "evaluate_delta": ("editing.evaluate.suite", "evaluate"),
    "RowScore": ("editing.evaluate.scoring", "RowScore"),
    "ScoreRow": ("editing.evaluate.scoring", "ScoreRow"),
    "score_rows": ("editing.evaluate.scoring", "score_rows"),
    "ParentScores": ("editing.evaluate.gate", "ParentScores"),
    "parent_side": ("editing.evaluate.gate", "parent_side"),
    "edited_side": ("editing.evaluate.gate", "edited_side"),
    "DataError": ("editing.evaluate.data", "DataError"),
    "load_records": ("editing.evaluate.data", "load_records"),
    "shared_data_dir": ("editing.paths", "shared_data_dir"),
    # export
    "export_peft_adapter": ("editing.export.peft", "export_peft_adapter"),
    "PeftExportError": ("editing.export.peft", "PeftExportError"),
}
"""Public name -> (module, attribute). ``evaluate_delta`` is ``editing.evaluate.evaluate``
under a name that does not shadow the ``editing.evaluate`` folder."""

__all__ = [
    "BaseWeights",
    "DataError",
    "DeltaError",
    "EditHparams",
    "EditRequest",
    "EditResult",
    "EditState",
    "Editor",
    "EditorCaches",
    "InvalidEditRequest",
    "LayerUpdate",
    "ParentScores",
    "PeftExportError",
    "RowScore",
    "STORED_NAMES",
    "STRENGTHS",
    "ScoreRow",
    "WeightDelta",
    "continuation_ids",
    "edited_side",
    "eval_batch_for",
    "evaluate_delta",
    "export_peft_adapter",
    "get_method",
    "is_null_space",
    "load_records",
    "merged_weights",
    "merged_weights_digest",
    "method_names",
    "model_fingerprint",
    "parent_side",
    "preset_for",
    "prompt_ids",
    "retired_name_error",
    "score_rows",
    "shared_data_dir",
    "weights_digest",
    "with_strength",
]
"""The names of ``_EXPORTS``, written out for tools that read ``__all__`` statically."""


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'editing' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what type checkers and IDEs see; at run time names load on first use
    from editing.editor import Editor, EditorCaches, EditResult
    from editing.evaluate.data import DataError, load_records
    from editing.evaluate.gate import ParentScores, edited_side, parent_side
    from editing.evaluate.scoring import RowScore, ScoreRow, score_rows
    from editing.evaluate.suite import evaluate as evaluate_delta
    from editing.export.peft import PeftExportError, export_peft_adapter
    from editing.forward.memory import eval_batch_for
    from editing.forward.tokens import continuation_ids, prompt_ids
    from editing.hparams import STORED_NAMES, EditHparams, retired_name_error
    from editing.methods import get_method, is_null_space, method_names
    from editing.paths import shared_data_dir
    from editing.presets import preset_for
    from editing.requests import EditRequest, InvalidEditRequest
    from editing.state import EditState
    from editing.strength import STRENGTHS, with_strength
    from editing.weights.delta import BaseWeights, DeltaError, LayerUpdate, WeightDelta
    from editing.weights.fingerprint import model_fingerprint, weights_digest
    from editing.weights.merged import merged_weights, merged_weights_digest
