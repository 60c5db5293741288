"""Deployment commands: ``export`` (export, validate and benchmark into a bundle) and ``verify``."""

from __future__ import annotations

import argparse
from pathlib import Path

from udacisense.cli.common import add_command

EXPORT_EXAMPLE = """example:
  udacisense export --checkpoint runs/demo/best.pt --formats pte,pte-int8,onnx,ptl
  udacisense verify runs/demo/deploy"""


def add_commands(commands) -> None:
    from udacisense.export import DEFAULT_FORMATS, FORMATS

    export = add_command(commands, "export", "export, validate and benchmark mobile artifacts into a bundle", EXPORT_EXAMPLE, run_export)
    export.add_argument("--checkpoint", type=Path, required=True)
    export.add_argument("--formats", default=",".join(DEFAULT_FORMATS), help=f"comma list of {', '.join(FORMATS)}")
    export.add_argument("--output", type=Path, help="bundle folder (default: deploy/ beside the checkpoint)")
    export.add_argument("--calibration-images", type=int, default=256, help="training images for int8 calibration")
    export.add_argument("--data-root", type=Path, help="where the checkpoint's data set lives, if not the default")
    export.add_argument("--test-subset", type=int, help="validate on only this many test images (default: all)")
    export.add_argument("--min-agreement", type=float, default=99.0, help="top-1 agreement with the source, percent")
    export.add_argument("--max-abs-diff", type=float, default=1e-3, help="largest fp32 logit difference allowed")
    export.add_argument("--runs", type=int, default=200, help="timed runs per latency measurement")

    verify = add_command(commands, "verify", "re-check a bundle's hashes and golden outputs", "example:\n  udacisense verify runs/demo/deploy",
                         run_verify)
    verify.add_argument("bundle", type=Path)


def run_export(args: argparse.Namespace) -> int:
    from udacisense.deploy.validate import Tolerances
    from udacisense.export import parse_formats
    from udacisense.export.bundle import build_bundle, format_table, remove_bundle, verify_bundle

    formats = parse_formats(args.formats)
    output = args.output or args.checkpoint.parent / "deploy"
    remove_bundle(output)
    print(f"exporting {args.checkpoint} to {output}/ as {', '.join(formats)}")
    manifest = build_bundle(
        args.checkpoint, output, formats,
        calibration_images=args.calibration_images, data_root=args.data_root, test_subset=args.test_subset,
        tolerances=Tolerances(args.min_agreement, args.max_abs_diff), latency_runs=args.runs,
    )
    print(f"\nvalidated on {manifest['test_images']} test images, latency at batch 1 (p50):")
    print(format_table(manifest))
    problems = verify_bundle(output)
    failed = [kind for kind, entry in manifest["artifacts"].items() if not entry.get("validation", {"passed": True})["passed"]]
    print(f"\nbundle {'verified' if not problems else 'NOT verified: ' + '; '.join(problems)} -> {output}/manifest.json")
    if failed:
        print(f"validation FAILED for: {', '.join(failed)}")
    return 1 if problems or failed else 0


def run_verify(args: argparse.Namespace) -> int:
    from udacisense.export.bundle import verify_bundle

    problems = verify_bundle(args.bundle)
    for problem in problems:
        print(f"FAIL {problem}")
    print("bundle verified: hashes and golden outputs match" if not problems else f"{len(problems)} problem(s) in {args.bundle}")
    return 1 if problems else 0
