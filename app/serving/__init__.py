"""Serving queries: every version as per-row weight additions on the base model, batched."""
