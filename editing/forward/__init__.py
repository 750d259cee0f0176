"""Putting text through a model, by the rules every part of the project shares.

``tokens.py`` (a target's tokens after its prompt, the fact token), ``chat.py`` (the text of a
chat turn), ``batch.py`` (right padding), ``hooks.py`` (reading and writing activations),
``logprob.py`` (teacher-forced log-probabilities), ``memory.py`` (how many rows one pass may
hold) and ``rng.py`` (seeded sampling that restores every generator). The editor, the
evaluation and the service all go through these, so a number one prints is about the tokens
the others see. Nothing here imports the rest of ``editing/``.
"""
