"""`udacisense search` against a hand-tuned recipe (mobile.yaml by default), from one baseline, in one run on one machine.

    python benchmarks/search.py --baseline runs/benchmarks/baseline_mobilenet_v3_small/best.pt [--budget-factor 2]
                                [--recipe mobile] [--runs-dir runs/benchmarks/search]

1. `udacisense run RECIPE` on the baseline (resumable), timed: its baseline measurement's and stages' seconds.
2. `udacisense search RECIPE` on the same baseline (so the recipe's own point opens the search's design), with a
   budget of --budget-factor x that time and, as constraints, the question asked: no larger than the recipe's int8
   .pte, and an accuracy drop (validation split) within the recipe's drop on the test split plus 0.25 pt (resumable
   with the same command). Latency is not a constraint: it is timed again below, alternately, because two timings
   minutes apart differ by more than the margins being compared.
3. The recipe's int8 .pte and every artifact on the search's front are timed again here, alternately, in fresh
   processes (batch 1, 1 thread), so that the latencies compare; sizes are the files'; top-1 is each one's whole
   test split (the search measures its front there at the end). A point dominates the recipe when it is at least as
   good on all three and better on one.

Results go to benchmarks/results/search.json and the "search" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import provenance, provenance_line, replace_doc_section, save_results  # noqa: E402
from udacisense.deploy.bench import bench_artifact  # noqa: E402
from udacisense.pipeline.runner import artifact_file, finished_result  # noqa: E402
from udacisense.pipeline.search import dominates, front_runs  # noqa: E402

ROUNDS = 3  # alternating timing rounds per artifact; the median of the rounds' p50s is reported


def udacisense(*arguments: str) -> int:
    """The CLI in its own process, as a user would run it."""
    return subprocess.run([sys.executable, "-m", "udacisense.cli", *arguments]).returncode


def recipe_run(recipe: str, baseline: Path, runs_dir: Path, overrides: list[str]) -> dict:
    resume = ["--resume"] if (runs_dir / recipe).is_dir() else []
    if udacisense("run", recipe, "--set", f"baseline={json.dumps({'checkpoint': str(baseline)})}", *overrides, "--runs-dir", str(runs_dir),
                  "--name", recipe, *resume) != 0:
        raise SystemExit(f"{recipe}.yaml failed; see its pipeline.log")
    return finished_result(runs_dir / recipe)


def retime(paths: dict[str, tuple[str, Path]], shape: tuple[int, ...]) -> dict[str, float]:
    """p50 at 1 thread of each (format, artifact), measured in alternating rounds (fresh process each), median over rounds."""
    rounds: dict[str, list[float]] = {label: [] for label in paths}
    for _ in range(ROUNDS):
        for label, (kind, path) in paths.items():
            rounds[label].append(bench_artifact(kind, path, shape, runs=300)["latency"]["1_thread"]["p50_ms"])
    return {label: sorted(values)[len(values) // 2] for label, values in rounds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="the fp32 MobileNetV3-Small checkpoint both start from")
    parser.add_argument("--recipe", default="mobile", help="the hand-tuned recipe the search is measured against (a shipped name)")
    parser.add_argument("--budget-factor", type=float, default=2.0, help="search budget as a multiple of the recipe's time")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/benchmarks/search"))
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="a recipe override for both (data.*, threads), e.g. for a smoke run: --set data.train_subset=2000")
    parser.add_argument("--recipe-set", action="append", default=[], metavar="KEY=VALUE", help="an override for the recipe only (prune.*)")
    parser.add_argument("--search-set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for the search only, e.g. search.full_epochs=30 (the fine-tune length of the recipe)")
    args = parser.parse_args()
    def as_flags(overrides: list[str]) -> list[str]:
        return [item for override in overrides for item in ("--set", override)]

    both = as_flags(args.overrides)
    baseline = args.baseline.resolve()

    label = f"{args.recipe}.yaml"
    hand = recipe_run(args.recipe, baseline, args.runs_dir, both + as_flags(args.recipe_set))
    # the steps' work clocks count every invocation (a run resumed after an interruption); the last invocation's wall time also
    # holds the export, so a run in one piece is counted whole
    hand_seconds = max(sum(stage["seconds"] for stage in hand["stages"]) + hand["baseline"]["seconds"], hand["seconds_this_invocation"])
    artifact = hand["deploy"]["artifacts"]["pte-int8"]
    hand_drop = hand["baseline"]["metrics"]["test_top1"] - artifact["validation"]["top1"]
    budget = args.budget_factor * hand_seconds
    search_dir = args.runs_dir / "search"
    resume = ["--resume"] if search_dir.is_dir() else []
    udacisense("search", args.recipe, "--checkpoint", str(baseline), "--budget", f"{budget:.0f}s", "--max-drop", f"{max(hand_drop, 0.0) + 0.25:.2f}",
               "--max-size-mb", f"{artifact['bytes'] / 1e6:.6f}", "--name", "search", "--runs-dir", str(args.runs_dir), *both, *as_flags(args.search_set), *resume)
    pareto = json.loads((search_dir / "search" / "pareto.json").read_text())
    front = {point["trial"]: point for point in pareto["front"]}

    shape = tuple(hand["baseline"]["input"]["shape"])
    paths = {label: ("pte-int8", artifact_file(args.runs_dir / args.recipe, hand, "pte-int8"))}
    for trial, run in front_runs(search_dir) or []:
        kind = front[trial]["trial_recipe"]["export"]["formats"][0]  # int8 .pte, or fp32 .pte for a point that does not quantize
        paths[trial] = (kind, artifact_file(run, finished_result(run), kind))
    latency = retime(paths, shape)
    rows = [{"label": label, "summary": "hand-tuned: " + "; ".join(stage["summary"] for stage in hand["stages"]),
             "top1": artifact["validation"]["top1"], "latency_ms": latency[label], "megabytes": paths[label][1].stat().st_size / 1e6}]
    rows += [{"label": trial, "summary": point["summary"], "top1": point.get("test_top1", float("nan")),
              "latency_ms": latency[trial], "megabytes": paths[trial][1].stat().st_size / 1e6} for trial, point in front.items()]
    for row in rows[1:]:
        row["dominates_recipe"] = dominates(row, rows[0])
    results = provenance() | {"recipe": args.recipe, "baseline": str(args.baseline), "recipe_seconds": hand_seconds, "budget_seconds": budget,
               "trials": pareto["trial_count"], "failed": pareto["failed"], "rows": rows,
               "command": " ".join(["python benchmarks/search.py", *sys.argv[1:]])}
    name = "search" if args.recipe == "mobile" else f"search_{args.recipe}"  # one results file and doc section per recipe
    save_results(name, results)
    lines = [f"### Search against {label}", "", f"{provenance_line(results)} "
             f"{label} took {hand_seconds / 60:.1f} min; the search's budget was {budget / 60:.1f} min, in which it ran "
             f"{pareto['trial_count']} trials ({len(pareto['failed'])} failed: "
             f"{'; '.join(row['summary'] + ': ' + row['error'] for row in pareto['failed']) or 'none'}). Latency: each artifact's `.pte`, "
             f"batch 1, 1 thread, median of {ROUNDS} alternating fresh-process rounds of 300 runs; top-1 on the whole test split.", "",
             f"| artifact | configuration | test top-1 | latency | size | dominates {label} |", "|---|---|---:|---:|---:|---|"]
    for row in rows:
        lines.append(f"| {row['label']} | {row['summary']} | {row['top1']:.2f}% | {row['latency_ms']:.3f} ms | {row['megabytes']:.3f} MB | "
                     f"{'' if 'dominates_recipe' not in row else 'yes' if row['dominates_recipe'] else 'no'} |")
    replace_doc_section(name, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
