"""Pick each method's preset from frontier points measured on the *select* records.

A study (not a benchmark, not run by CI). Last run at commit 06003b2 (2026-11-22);
its figures: docs/results/frontier.md.

The rule puts what a user sees first: among the points whose efficacy Success is at least
95 and generalization Success at least 90, the one with the lowest neighbourhood KL (the
edit that takes while moving the rest least). Where no point of a method reaches that, its
point with the highest efficacy + generalization. Records of the ``dev`` split must not be
used to choose: they are the ones the README reports.

    python -m studies.choose_preset bench/results/frontier_select.json [more.json ...] [--methods fe,memit]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

MIN_EFFICACY = 95.0
MIN_GENERALIZATION = 90.0


def choose(points: list[dict[str, Any]], method: str) -> dict[str, Any] | None:
    """The chosen point of ``method`` (see the module's docstring), or None without points."""
    mine = [p for p in points if p["method"] == method]
    if not mine:
        return None
    good = [p for p in mine if p["metrics"]["efficacy_success"] >= MIN_EFFICACY
            and p["metrics"]["generalization_success"] >= MIN_GENERALIZATION]
    if good:
        return min(good, key=lambda p: p["metrics"]["kl"])
    return max(mine, key=lambda p: (p["metrics"]["efficacy_success"]
                                    + p["metrics"]["generalization_success"], -p["metrics"]["kl"]))


def load_points(paths: list[Path]) -> list[dict[str, Any]]:
    points = []
    for path in paths:
        run = json.loads(path.read_text())
        if run.get("split") != "select":
            raise SystemExit(f"{path}: measured on the {run.get('split')!r} records; choose on 'select'")
        points += run["points"]
    return points


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="studies.frontier JSON files (split select)")
    parser.add_argument("--methods", default="fe,memit,fe_alphaedit")
    args = parser.parse_args(argv)
    points = load_points(args.results)
    chosen = {}
    for method in args.methods.split(","):
        point = choose(points, method)
        if point is not None:
            chosen[method] = {"setting": point["setting"], "overrides": point["overrides"],
                              "knob": point["knob"], "strength": point["strength"],
                              "metrics": {k: point["metrics"][k] for k in
                                          ("efficacy_success", "efficacy_accuracy", "generalization_success",
                                           "specificity_success", "kl", "top1")}}
    print(json.dumps(chosen, indent=1))
    return chosen


if __name__ == "__main__":
    main()
