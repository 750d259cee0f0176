"""Locality without ground truth: how much an edit moves the next-token distribution on
prompts it should not touch (KL and top-k overlap, unedited vs edited model).

Ground-truth specificity only asks whether one fact survived; these metrics see any drift
of the whole distribution, which is what users of a service notice first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from editing.evaluate.metrics import kl_divergence, topk_overlap
from editing.evaluate.scoring import RowScore, ScoreRow

TOP_KS: tuple[int, ...] = (1, 5, 10)


def record_locality(
    rows: Sequence[ScoreRow],
    edited: Mapping[ScoreRow, RowScore],
    base: Mapping[ScoreRow, RowScore],
) -> dict[str, float | None]:
    """Mean KL(unedited ‖ edited) and top-k overlaps (fractions) over one record's rows;
    every key ``None`` for a record without such rows.

    Each row's next-token distribution is the one after its prompt (scored with
    ``next_for``), so any row of a neighborhood prompt serves, whatever its target.
    """
    if not rows:
        return dict.fromkeys(["kl", *(f"top{k}" for k in TOP_KS)])
    p = torch.stack([_next(base[r]) for r in rows])
    q = torch.stack([_next(edited[r]) for r in rows])
    out: dict[str, float | None] = {"kl": float(kl_divergence(p, q).mean())}
    for k in TOP_KS:
        out[f"top{k}"] = float(topk_overlap(p, q, min(k, p.shape[-1])).mean())
    return out


def _next(score: RowScore) -> torch.Tensor:
    if score.next_logprobs is None:
        raise ValueError("not a next-token row")
    return score.next_logprobs
