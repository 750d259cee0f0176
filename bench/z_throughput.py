"""z optimisation throughput: batched vs one request at a time, and what causality saves.

Same requests, same steps, early stop off, so every request ends at the same loss either
way (the batched loss is a sum of independent per-request losses); facts/second compares
the wall time. The prefix-cache rows compare the batched path with and without reusing the
keys/values of tokens before the fact token (they cannot see z).

    python -m bench.z_throughput [--n 16] [--steps 10]
"""

from __future__ import annotations

import argparse
import time

from bench.common import table, write_json
from editing import Editor
from editing.evaluate.data import load_records
from editing.paths import shared_data_dir
from editing.presets import preset_for
from editing.targets.z import optimize_z
from models.load import cache_dir, load_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)

    lm = load_model(args.model)
    hp = preset_for(lm.name, lm.model).replace(z_steps=args.steps, nll_stop=0.0)
    requests = [r.request for r in load_records(shared_data_dir() / "mcf_dev.json", limit=args.n)]
    prefixes = Editor(lm.model, lm.tokenizer, hparams=hp, model_name=lm.name, cache_dir=cache_dir()).prefixes()
    layer = hp.layers[0]

    def run(batch: bool, prefix_cache: bool) -> tuple[float, list[float], int, int]:
        started = time.perf_counter()
        if batch:
            res = optimize_z(lm.model, lm.tokenizer, requests, prefixes, layer, hp,
                             group_size=len(requests), prefix_cache=prefix_cache)
            nll, tokens, uncached = res.nll, res.tokens_per_step, res.tokens_per_step_uncached
        else:
            nll, tokens, uncached = [], 0, 0
            for request in requests:
                res = optimize_z(lm.model, lm.tokenizer, [request], prefixes, layer, hp, prefix_cache=prefix_cache)
                nll += res.nll
                tokens += res.tokens_per_step
                uncached += res.tokens_per_step_uncached
        return time.perf_counter() - started, nll, tokens, uncached

    results = {}
    for name, batch, cache in [("one_at_a_time", False, True), ("batched", True, True),
                               ("batched_no_prefix_cache", True, False)]:
        seconds, nll, tokens, uncached = run(batch, cache)
        results[name] = {"seconds": seconds, "facts_per_s": len(requests) / seconds,
                         "mean_final_nll": sum(nll) / len(nll), "tokens_per_step": tokens,
                         "tokens_per_step_without_cache": uncached}
        print(f"{name}: {seconds:.1f}s", flush=True)
    speedup = results["batched"]["facts_per_s"] / results["one_at_a_time"]["facts_per_s"]
    cache_gain = results["batched_no_prefix_cache"]["seconds"] / results["batched"]["seconds"]
    saved = 1 - results["batched"]["tokens_per_step"] / results["batched"]["tokens_per_step_without_cache"]
    payload = {"model": lm.name, "n": len(requests), "steps": args.steps, "layer": layer,
               "prefixes": len(prefixes), "results": results, "batched_speedup": speedup,
               "prefix_cache_speedup": cache_gain, "tokens_saved_by_causality": saved}
    path = write_json("z_throughput", payload)
    print(table(["path", "seconds", "facts/s", "mean final NLL", "tokens/step"],
                [[k, v["seconds"], v["facts_per_s"], v["mean_final_nll"], v["tokens_per_step"]]
                 for k, v in results.items()]))
    print(f"\nbatched vs one at a time: {speedup:.1f}x; prefix cache: {cache_gain:.1f}x faster, "
          f"{100 * saved:.0f}% of tokens per step not recomputed\nwrote {path}")


if __name__ == "__main__":
    main()
