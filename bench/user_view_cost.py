"""What the user view (editing/evaluate/chat.py) costs, side by side in one process.

One edit of the first N MCF dev records (z from the z cache when there), then the evaluation
with today's metric set (``user_view=False``) and with the user view, on the same delta; with
``--unedited`` also the user view of the unedited model (the "before" column). Timing both in
one process keeps a shared machine's load out of the ratio as far as it can be.

    python -m bench.user_view_cost [--n 20] [--unedited] [--hparam key=JSON ...] [--model NAME]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, add_hparam_arg, parse_hparams, table, write_json
from editing import Editor
from editing.evaluate import evaluate, load_records
from editing.paths import shared_data_dir
from editing.presets import preset_for
from editing.targets.zcache import ZCache
from models.load import cache_dir, load_model


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20, help="the first N MCF dev records, edited in one batch")
    parser.add_argument("--unedited", action="store_true", help="also evaluate the unedited model")
    add_hparam_arg(parser)
    parser.add_argument("--model", default=None)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    t: dict[str, float] = {}
    mark = time.perf_counter()
    lm = load_model(args.model)
    hp = preset_for(lm.name, lm.model).with_overrides(parse_hparams(parser, args.hparam))
    editor = Editor(lm.model, lm.tokenizer, hparams=hp, model_name=lm.name, cache_dir=cache_dir(),
                    z_cache=ZCache(cache_dir() / "z"))
    t["load_s"] = time.perf_counter() - mark
    records = load_records(shared_data_dir() / "mcf_dev.json", limit=args.n)
    mark = time.perf_counter()
    delta = editor.edit([r.request for r in records]).delta
    t["edit_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    evaluate(lm.model, lm.tokenizer, records, delta, user_view=False)
    t["evaluate_cloze_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    edited = evaluate(lm.model, lm.tokenizer, records, delta, per_record=True)
    t["evaluate_full_s"] = time.perf_counter() - mark
    before = evaluate(lm.model, lm.tokenizer, records, None) if args.unedited else None
    today = t["load_s"] + t["edit_s"] + t["evaluate_cloze_s"]
    new = t["load_s"] + t["edit_s"] + t["evaluate_full_s"]
    answers = [{k: m[k] for k in ("chat_answer", "cloze_answer")} for m in edited.pop("records")]
    result = {"model": lm.name, "n": args.n, "hparams": hp.to_dict(), "timings": t,
              "ratio": new / today, "edited": edited, "unedited": before, "answers": answers}
    path = write_json("user_view_cost", result, out=args.out_dir / "user_view_cost.json")
    print(table(["", "edit s", "evaluate s", "total s", "ratio"],
                [["cloze metrics only", f"{t['edit_s']:.1f}", f"{t['evaluate_cloze_s']:.1f}", f"{today:.1f}", "1"],
                 ["with the user view", f"{t['edit_s']:.1f}", f"{t['evaluate_full_s']:.1f}", f"{new:.1f}",
                  f"{new / today:.2f}"]]))
    keys = [k for k, v in edited.items() if isinstance(v, float)]
    print(table(["metric", "unedited", "edited"],
                [[k, "—" if before is None or before.get(k) is None else f"{before[k]:.4g}",
                  f"{edited[k]:.4g}"] for k in keys]))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
