"""Variants benchmark (issue 15): one bundle of Fashion-MNIST models x formats, and the selector at three budgets.

    python benchmarks/variants.py [--run runs/quickstart] [--output runs/benchmarks/variants]

Models: the pipeline run's baseline (exported as .pte fp32, .pte int8 and ONNX fp32) and its final model (the int8
.pte the pipeline built, with .pte fp32 and ONNX fp32 exported again). Every variant is validated on all 10,000 test
images and timed at batch 1 in a fresh process; then every variant is measured again (golden check first) and the
selector's choice at three budgets derived from those numbers is recorded. Writes benchmarks/results/variants.json and
the "variants" section of docs/benchmarks.md. Run it on a quiet machine: the latencies are the point.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import provenance, provenance_line, replace_doc_section, save_results  # noqa: E402
from udacisense.bundle.select import format_selection, select_variant  # noqa: E402
from udacisense.bundle.variants import build_variant_bundle, format_variants, resolve_sources, three_budgets  # noqa: E402
from udacisense.bundle.verify import verify_bundle  # noqa: E402
from udacisense.deploy.validate import Tolerances  # noqa: E402
from udacisense.io import read_yaml  # noqa: E402
from udacisense.pipeline.sources import variant_models  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/quickstart"), help="a finished pipeline run ('make demo' makes runs/quickstart)")
    parser.add_argument("--output", type=Path, default=Path("runs/benchmarks/variants"))
    parser.add_argument("--formats", default="pte,pte-int8,onnx")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per variant in each selection")
    args = parser.parse_args()
    baseline = args.run / "stages" / "00_baseline" / "best.pt"
    if not baseline.is_file() or not (args.run / "deploy" / "manifest.json").is_file():
        sys.exit(f"{args.run} is not a finished pipeline run with a baseline; run 'make demo' first (it makes runs/quickstart)")
    started = time.perf_counter()
    sources = resolve_sources(variant_models([f"baseline={baseline}", f"{args.run.name}={args.run}"]))
    recipe = read_yaml(args.run / "recipe.yaml")
    tolerances = Tolerances(min_agreement=recipe["export"]["min_agreement"])  # the run's own threshold for its int8 artifact
    manifest = build_variant_bundle(sources, args.output, args.formats.split(","), tolerances=tolerances)
    problems = verify_bundle(args.output)
    # as a user would: one selection with room for everything, then the other budgets from what it measured, each a new measurement
    generous = select_variant(args.output, float("inf"), runs=args.runs)
    budgets = three_budgets(generous.measurements)
    selections = {label: select_variant(args.output, budget, runs=args.runs) for label, budget in budgets.items()}
    seconds = time.perf_counter() - started
    results = provenance() | {"run": str(args.run), "manifest": manifest, "verify": problems, "seconds": seconds,
               "selections": {label: selection.to_json() for label, selection in selections.items()}}
    save_results("variants", results)
    body = [
        "### Variants of two models in one bundle, and the selector",
        "",
        f"{provenance_line(results)} It took {seconds / 60:.1f} min. "
        f"Models: the baseline and the final model of `{args.run}` (the `make demo` pipeline); each variant validated on all "
        f"{manifest['models']['baseline']['test_images']:,} test images, timed at batch 1 in a fresh process (p50/p90 of 200 runs).",
        "",
        "```",
        format_variants(manifest),
        "```",
        "",
        f"`udacisense verify`: {'passed' if not problems else '; '.join(problems)}. `udacisense select` with no limit measured every "
        f"variant again (golden check, then {args.runs} timed runs); three budgets came from those p50s (10x the slowest, the geometric "
        "mean of the two fastest, a tenth of the fastest), and each selection below measured every variant anew:",
        "",
    ]
    for label, selection in selections.items():
        body += [f"**{label}** (p50 <= {selection.latency_ms:.3f} ms):", "", "```", format_selection(selection), "```", ""]
    replace_doc_section("variants", "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    main()
