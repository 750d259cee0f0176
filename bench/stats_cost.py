"""Covariance statistics: time and peak memory for the default model's edited layers.

Computed from scratch into a temporary cache directory (the real cache is not touched).

    python -m bench.stats_cost [--samples 1000] [--seq-len 128]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import torch

from bench.common import table, write_json
from editing.presets import preset_for
from editing.solve.stats import CovarianceCache, default_corpus
from editing.weights.fingerprint import model_fingerprint
from models.load import load_model


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)
    lm = load_model(args.model)
    hp = preset_for(lm.name, lm.model)
    samples = args.samples or hp.stats_samples
    seq_len = args.seq_len or hp.stats_seq_len
    corpus = default_corpus()
    rss_loaded = peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        cache = CovarianceCache(tmp, corpus, samples, seq_len)
        started = time.perf_counter()
        covs = cache.get(lm.model, lm.tokenizer, hp.layers, model_fingerprint(lm.model))
        seconds = time.perf_counter() - started
        again = time.perf_counter()
        CovarianceCache(tmp, corpus, samples, seq_len).get(lm.model, lm.tokenizer, hp.layers,
                                                           model_fingerprint(lm.model))
        cached_seconds = time.perf_counter() - again
    d_k = next(iter(covs.values())).shape[0]
    tokens = samples * seq_len
    payload = {
        "model": lm.name, "layers": list(hp.layers), "corpus": corpus.source, "samples": samples,
        "seq_len": seq_len, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
        "cached_load_seconds": cached_seconds, "peak_rss_mb_after_model_load": rss_loaded,
        "peak_rss_mb": peak_rss_mb(), "accumulator_mb": len(covs) * d_k * d_k * 8 / 2**20,
        "min_eigenvalue": min(float(torch.linalg.eigvalsh(c).min()) for c in covs.values()),
    }
    path = write_json("stats_cost", payload)
    print(table(["layers", "tokens", "seconds", "tokens/s", "peak RSS MB", "accumulators MB", "cached load s"],
                [[str(list(hp.layers)), tokens, seconds, tokens / seconds, payload["peak_rss_mb"],
                  payload["accumulator_mb"], cached_seconds]]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
