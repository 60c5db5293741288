"""Deployment benchmark: every artifact of the Fashion-MNIST MobileNetV3-Small baseline in its own runtime.

    python benchmarks/deploy.py [--checkpoint runs/benchmarks/baseline_mobilenet_v3_small/best.pt]

Exports eager fp32 -> .pte fp32, .pte int8, ONNX fp32, ONNX int8, .ptl; validates each on all 10,000
test images; times each at batch 1 (1 thread and all threads); writes benchmarks/results/deploy.json
and the "deploy" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import provenance, provenance_line, replace_doc_section, save_results  # noqa: E402
from udacisense.bundle.build import build_bundle, format_table, remove_bundle  # noqa: E402
from udacisense.bundle.verify import verify_bundle  # noqa: E402
from udacisense.formats import DEFAULT_FORMATS  # noqa: E402

DEFAULT_CHECKPOINT = Path("runs/benchmarks/baseline_mobilenet_v3_small/best.pt")


def render(results: dict) -> str:
    """The docs section: the bundle's table and what it says about the int8 file."""
    manifest, checkpoint, problems = results["manifest"], results["checkpoint"], results["verify"]
    source = manifest["source"]
    int8 = manifest["artifacts"]["pte-int8"]
    drop = source["test_top1"] - int8["validation"]["top1"]
    share = int8["bytes"] / source["checkpoint_bytes"]
    not_delegated = ", ".join(f"{op} x{count}" for op, count in int8["export"]["not_delegated_ops"].items()) or "none"
    return "\n".join(
        [
            "### The reference MobileNetV3-Small in each runtime",
            "",
            f"{provenance_line(results)} Source: `{checkpoint}` ({source['test_top1']:.2f}% test top-1, eager). "
            f"Every artifact validated on all {manifest['test_images']:,} test images in its runtime; agreement is top-1 agreement "
            "with the eager fp32 model; latency at batch 1, p50 of 200 runs after 20 warm-up runs, fresh process.",
            "",
            "```",
            format_table(manifest),
            "```",
            "",
            f"- int8 `.pte`: {int8['bytes'] / 1e6:.2f} MB = {100 * share:.1f}% of the fp32 checkpoint "
            f"({source['checkpoint_bytes'] / 1e6:.2f} MB), top-1 drop {drop:.2f} pt.",
            f"- XNNPACK delegated {100 * int8['export']['delegated_share']:.1f}% of the int8 graph's nodes; "
            f"not delegated: {not_delegated}.",
            f"- Bundle verification (hashes + golden outputs): {'passed' if not problems else '; '.join(problems)}.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--output", type=Path, default=Path("runs/benchmarks/deploy"))
    args = parser.parse_args()
    remove_bundle(args.output)
    manifest = build_bundle(args.checkpoint, args.output, list(DEFAULT_FORMATS))
    problems = verify_bundle(args.output)
    results = provenance() | {"checkpoint": str(args.checkpoint), "manifest": manifest, "verify": problems}
    save_results("deploy", results)
    replace_doc_section("deploy", render(results))
    print(format_table(manifest))


if __name__ == "__main__":
    main()
