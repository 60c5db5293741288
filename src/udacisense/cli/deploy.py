"""Deployment commands: ``export`` (export, validate and benchmark into a bundle), ``bundle`` (several variants in one
bundle), ``select`` (the variant that fits this machine), ``verify``, ``serve`` (a bundle's web page) and ``keygen``."""

from __future__ import annotations

import argparse
from pathlib import Path

from udacisense.cli.common import add_command
from udacisense.deploy.validate import Tolerances
from udacisense.errors import UdaciSenseError

EXPORT_EXAMPLE = """example:
  udacisense export --checkpoint runs/demo/best.pt --formats pte,pte-int8,onnx,ptl
  udacisense verify runs/demo/deploy
  udacisense keygen keys/release
  udacisense export --checkpoint runs/demo/best.pt --sign keys/release
  udacisense verify runs/demo/deploy --key keys/release.pub"""


BUNDLE_EXAMPLE = """example:
  udacisense bundle --variants runs/mobile/stages/00_baseline/best.pt,pruned=runs/mobile --formats pte,pte-int8,onnx --output runs/variants
  udacisense select runs/variants --latency-ms 0.5"""

SELECT_EXAMPLE = """example:
  udacisense select runs/variants --latency-ms 0.5
  udacisense select runs/variants --latency-ms 0.3 --memory-mb 4 --threads 2 --json
  udacisense select runs/variants --latency-ms 0.5 --key keys/release.pub

A signed bundle's signature is checked first (a bad one refuses the whole bundle; --key also says who must have
signed). Every file a variant uses must have the manifest's sha256 (a changed file is rejected, never run). Then each
variant runs in a fresh process: its golden outputs are checked, then it is timed. Exit status 0 with a choice, 1 when
no variant fits (the measured latencies are listed), 2 when the bundle is refused."""


def add_commands(commands) -> None:
    from udacisense.formats import DEFAULT_FORMATS, FORMATS

    export = add_command(commands, "export", "export, validate and benchmark mobile artifacts into a bundle", EXPORT_EXAMPLE, run_export)
    export.add_argument("--checkpoint", type=Path, required=True)
    export.add_argument("--formats", default=",".join(DEFAULT_FORMATS), help=f"comma list of {', '.join(FORMATS)}")
    export.add_argument("--output", type=Path, help="bundle folder (default: deploy/ beside the checkpoint)")
    _bundle_arguments(export)

    bundle = add_command(commands, "bundle", "several model variants (models x formats) in one bundle, for apps that pick one per device",
                         BUNDLE_EXAMPLE, run_bundle)
    bundle.add_argument("--variants", required=True, metavar="[NAME=]PATH,...",
                        help="models to ship: checkpoints (exported to every --formats), bundles or run folders (their int8 artifacts "
                        "as built, fp32 formats exported again), or a search run (its Pareto front)")
    bundle.add_argument("--formats", default="pte,pte-int8,onnx", help=f"comma list of {', '.join(FORMATS)}")
    bundle.add_argument("--output", type=Path, required=True, help="bundle folder (replaced if it holds a bundle)")
    _bundle_arguments(bundle)

    select = add_command(commands, "select", "pick the most accurate variant of a bundle that meets a latency budget on this machine",
                         SELECT_EXAMPLE, run_select)
    select.add_argument("bundle", type=Path)
    select.add_argument("--latency-ms", type=float, required=True, help="p50 latency budget at batch 1, milliseconds")
    select.add_argument("--memory-mb", type=float, help="memory budget for the loaded model, megabytes")
    select.add_argument("--threads", type=int, default=1, help="threads the app gives the model")
    select.add_argument("--runs", type=int, default=50, help="timed runs per variant (after 10 warm-up runs)")
    select.add_argument("--json", action="store_true", help="print the decision as JSON, for programs")
    select.add_argument("--key", type=Path, metavar="PUBLIC_KEY",
                        help="require a valid signature by this PEM public key (without it a signature is checked with the key it stores)")

    verify = add_command(commands, "verify", "re-check a bundle's signature, hashes and golden outputs",
                         "example:\n  udacisense verify runs/demo/deploy --key keys/release.pub", run_verify)
    verify.add_argument("bundle", type=Path)
    verify.add_argument("--key", type=Path, metavar="PUBLIC_KEY", help="require a valid signature by this PEM public key")

    serve = add_command(commands, "serve", "serve a bundle's web page on 127.0.0.1, for a browser",
                        "example:\n  udacisense export --checkpoint runs/demo/best.pt --formats onnx-int8,web\n  udacisense serve runs/demo/deploy", run_serve)
    serve.add_argument("bundle", type=Path, help="a bundle exported with the web format (or a bundle of variants)")
    serve.add_argument("--port", type=int, default=0, help="the port on 127.0.0.1 (default: a free one, printed)")

    keygen = add_command(commands, "keygen", "make an Ed25519 key pair for signing bundles",
                         "example:\n  udacisense keygen keys/release   # writes keys/release (private) and keys/release.pub", run_keygen)
    keygen.add_argument("path", type=Path, help="the private key's path; the public key is written beside it with .pub added")


def _bundle_arguments(parser: argparse.ArgumentParser) -> None:
    """How a bundle is built, validated, timed and signed: shared by export and bundle."""
    parser.add_argument("--calibration-images", type=int, default=256, help="training images for int8 calibration")
    parser.add_argument("--data-root", type=Path, help="where the checkpoint's data set lives, if not the default")
    parser.add_argument("--test-subset", type=int, help="validate on only this many test images (default: all)")
    parser.add_argument("--min-agreement", type=float, default=Tolerances.min_agreement, help="top-1 agreement with the source, percent "
                        "(default %(default)s)")
    parser.add_argument("--max-abs-diff", type=float, default=Tolerances.max_abs_diff_fp32, help="largest fp32 logit difference allowed "
                        "(default %(default)s)")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per latency measurement")
    parser.add_argument("--sign", type=Path, metavar="PRIVATE_KEY", help="sign the manifest with this PEM key (it stays out of the bundle)")


def run_export(args: argparse.Namespace) -> int:
    from udacisense.bundle.build import build_bundle, format_table, remove_bundle
    from udacisense.bundle.signing import sign_bundle
    from udacisense.bundle.verify import verify_bundle
    from udacisense.deploy.validate import require_validated, validation_failures
    from udacisense.formats import parse_formats

    if args.sign is not None and not args.sign.is_file():  # before minutes of export, not after
        raise UdaciSenseError(f"signing key {args.sign} does not exist; make one with 'udacisense keygen {args.sign}'")
    formats = parse_formats(args.formats)
    output = args.output or args.checkpoint.parent / "deploy"
    remove_bundle(output)
    print(f"exporting {args.checkpoint} to {output}/ as {', '.join(formats)}")
    manifest = build_bundle(
        args.checkpoint, output, formats,
        calibration_images=args.calibration_images, data_root=args.data_root or _trained_root(args.checkpoint), test_subset=args.test_subset,
        tolerances=Tolerances(args.min_agreement, args.max_abs_diff), latency_runs=args.runs,
    )
    print(f"\nvalidated on {manifest['test_images']} test images, latency at batch 1 (p50):")
    print(format_table(manifest))
    if args.sign is not None:
        record = sign_bundle(output, args.sign)
        print(f"\nsigned {output}/manifest.sig ({record['algorithm']}, public key sha256 {record['public_key_sha256'][:16]}…)")
    problems = verify_bundle(output)
    print(f"\nbundle {'verified' if not problems else 'NOT verified: ' + '; '.join(problems)} -> {output}/manifest.json")
    require_validated(validation_failures(manifest), f"bundle {output}")
    return 1 if problems else 0


def run_bundle(args: argparse.Namespace) -> int:
    from udacisense.bundle.signing import sign_bundle
    from udacisense.bundle.variants import build_variant_bundle, format_variants, resolve_sources
    from udacisense.deploy.validate import require_validated, validation_failures
    from udacisense.formats import parse_formats
    from udacisense.pipeline.sources import parse_variant_specs, variant_models

    if args.sign is not None and not args.sign.is_file():
        raise UdaciSenseError(f"signing key {args.sign} does not exist; make one with 'udacisense keygen {args.sign}'")
    formats = parse_formats(args.formats)
    sources = resolve_sources(variant_models(parse_variant_specs(args.variants)))
    manifest = build_variant_bundle(sources, args.output, formats, latency_runs=args.runs, calibration_images=args.calibration_images,
                                    data_root=args.data_root, test_subset=args.test_subset,
                                    tolerances=Tolerances(args.min_agreement, args.max_abs_diff))
    print(f"\n{len(manifest['variants'])} variants, in order of preference:")
    print(format_variants(manifest))
    if args.sign is not None:
        sign_bundle(args.output, args.sign)
        print(f"signed {args.output}/manifest.sig")
    print(f"bundle -> {args.output}/manifest.json; selectors in {args.output}/selector/; the selection on this machine in {args.output}/report.md")
    verified = run_verify(argparse.Namespace(bundle=args.output, key=None))
    require_validated(validation_failures(manifest), f"kept in the bundle {args.output}; the selector never picks them")
    return verified


def run_select(args: argparse.Namespace) -> int:
    import json

    from udacisense.bundle.select import format_selection, select_variant

    if args.threads < 1 or args.runs < 1:
        raise UdaciSenseError("--threads and --runs must be at least 1")
    selection = select_variant(args.bundle, args.latency_ms, args.memory_mb, threads=args.threads, runs=args.runs, public_key=args.key)
    print(json.dumps(selection.to_json(), indent=2) if args.json else format_selection(selection))
    return 0 if selection.chosen is not None else 1


def run_verify(args: argparse.Namespace) -> int:
    from udacisense.bundle.signing import signature_note
    from udacisense.bundle.verify import verify_bundle

    problems = verify_bundle(args.bundle, public_key=args.key)
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        print(f"{len(problems)} problem(s) in {args.bundle}")
        return 1
    signed = f"signature valid for {args.key}" if args.key else signature_note(args.bundle)
    print(f"bundle verified: hashes and golden outputs match; {signed}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from udacisense.bundle.web import page_server, web_pages

    pages = web_pages(args.bundle)
    if not pages:
        raise UdaciSenseError(f"{args.bundle} has no web page: export it with the web format, e.g. "
                              f"udacisense export --checkpoint best.pt --formats onnx-int8,web --output {args.bundle}")
    try:
        server = page_server(args.bundle, args.port)
    except OSError as error:
        raise UdaciSenseError(f"cannot serve on 127.0.0.1:{args.port}: {error.strerror}; choose another --port, or leave it out for a free one")
    host, port = server.server_address[:2]
    for page in pages:
        print(f"http://{host}:{port}/{page.parent.relative_to(args.bundle).as_posix()}/", flush=True)
    print(f"serving {args.bundle} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def run_keygen(args: argparse.Namespace) -> int:
    from udacisense.bundle.signing import generate_key

    private, public = generate_key(args.path)
    print(f"private key {private} (keep it secret, out of any bundle); public key {public} (ship it with the app, pass it to verify --key)")
    return 0


def _trained_root(checkpoint: Path) -> Path | None:
    """The data root the checkpoint's training config names (an ImageFolder's), so that export needs no --data-root."""
    from udacisense.checkpoint import training_data

    root = training_data(checkpoint).get("root") if checkpoint.is_file() else None
    return Path(root) if root else None
