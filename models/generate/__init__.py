"""Batched, multi-version text generation on a loaded model (no service types).

- :mod:`.chat`: messages -> token ids with the tokenizer's chat template;
- :mod:`.sampling`: greedy / temperature / top-p with a per-request seed, stop strings;
- :mod:`.rows`: each batch row's own version as a low-rank addition on MLP output matrices;
- :mod:`.engine`: continuous batching (prefill + decode, KV cache) and :func:`generate`.
"""

from models.generate.chat import BadMessages, NoChatTemplate, render_chat
from models.generate.engine import BatchEngine, Completion, Request, generate
from models.generate.rows import Additions, RowAdditions
from models.generate.sampling import SamplingParams

__all__ = [
    "Additions", "BadMessages", "BatchEngine", "Completion", "NoChatTemplate", "Request",
    "RowAdditions", "SamplingParams", "generate", "render_chat",
]
