"""Locate-then-edit for causal LMs: FE (forward replay, the default) and MEMIT baselines.

Pure torch + transformers: no web, no Redis, no global state. Typical use::

    from models.load import load_model
    from editing import Editor, EditRequest

    lm = load_model()                       # the default SmolLM2-135M-Instruct
    editor = Editor(lm.model, lm.tokenizer) # preset hyper-parameters for the model
    result = editor.edit([EditRequest("Danielle Darrieux", "The mother tongue of {} is", "English")])
    result.delta.apply(lm.model)            # or keep result.delta.save("edit.safetensors")
"""

from editing.editor import Editor, EditorCaches, EditResult
from editing.hparams import EditHparams
from editing.requests import EditRequest, InvalidEditRequest
from editing.state import EditState
from editing.weights.delta import WeightDelta

__all__ = [
    "EditHparams",
    "EditRequest",
    "EditResult",
    "EditState",
    "Editor",
    "EditorCaches",
    "InvalidEditRequest",
    "WeightDelta",
]
