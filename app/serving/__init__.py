"""Model serving: the weights one process holds, stored deltas, following the active version, queries, export."""
