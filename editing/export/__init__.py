"""Deltas in other formats, for engines that do not run this project's code.

``peft.py``: a version's chain of deltas as one PEFT LoRA adapter (what vLLM serves). It
reads :mod:`editing.weights` only: an export never recomputes an edit.
"""
