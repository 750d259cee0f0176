"""What an edit must reach: the keys and target hidden states of the facts.

``templates.py`` (context prefixes sampled from the model), ``encoding.py`` (requests as
tokenised rows, one per prefix), ``keys.py`` (activations at the fact token), ``z.py`` (the
optimised target hidden state z, and its replay through later layers) and ``zcache.py`` (z
cached by the weights it was computed on). Methods turn these into per-layer targets
(:mod:`editing.methods`); the solve (:mod:`editing.solve`) never sees the prompts.
"""

from editing.targets.z import ZResult, optimize_z, replay_targets

__all__ = ["ZResult", "optimize_z", "replay_targets"]
