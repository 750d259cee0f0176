"""Seeded sampling that leaves every random generator as it found it.

``torch.manual_seed`` reseeds the CPU *and* every CUDA device, so code that seeds for
reproducibility (context prefixes, the sampled statistics corpus) must restore all of them,
not only the CPU's: ``torch.random.fork_rng`` does, given the CUDA devices in use.
"""

from __future__ import annotations

import torch


def cuda_devices() -> list[int]:
    """Indices of the CUDA devices whose RNG state ``fork_rng`` must save and restore."""
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
