"""Weight deltas: what an edit produces, and everything about holding one on a model.

``delta.py`` (:class:`~editing.weights.delta.WeightDelta`: per-layer updates, apply,
bit-identical revert, safetensors with their own sha256), ``precision.py`` (a half-precision
model's edited matrices held in float32 so a small update is not rounded away) and
``fingerprint.py`` (which base model, which edited state). A folder of its own because the
service stores, serves and exports these files without running an edit: nothing here imports
the rest of ``editing/``, so a change to how edits are computed cannot change how stored
deltas are read.
"""
