"""Model serving: the weights one process holds, stored deltas, following the active version,
queries (every version as per-row weight additions on the base model, batched), export."""
