"""Recipe commands: ``run``, ``check``, ``recipes`` and ``compare``."""

from __future__ import annotations

import argparse
from pathlib import Path

from udacisense.cli.common import add_command, nproc_argument
from udacisense.errors import UdaciSenseError

RUN_EXAMPLE = """example:
  udacisense run quickstart                                # a shipped recipe, or a path: udacisense run my_recipe.yaml
  udacisense run mobile --set prune.fine_tune.epochs=10 --set targets.max_accuracy_drop=1.5
  udacisense run mobile --resume                           # continue after a crash; finished stages are reused
  udacisense run mobile --strict                           # exit status 1 when a target is missed (a failed validation always is)
  udacisense run quickstart --track mlflow                 # also log it to MLflow (runs/mlflow/mlflow.db)"""
SEARCH_EXAMPLE = """examples:
  udacisense search --checkpoint runs/baseline/best.pt --budget 2h --max-drop 1.0 --name fmnist
  udacisense search mobile --budget 90m --max-latency-ms 0.15 --max-size-mb 0.4   # a recipe's data, baseline and search: section
  udacisense search --checkpoint best.pt --storage postgresql://user@host/db --name shared   # one more worker on a shared study
  udacisense search --resume --name fmnist --checkpoint runs/baseline/best.pt    # continue after a crash
  udacisense search --show fmnist                                                  # print the front"""
SEARCH_FIELDS = ("budget", "trials", "max_drop", "max_latency_ms", "max_size_mb", "proxy_epochs", "full_epochs", "storage", "seed")
COMPARE_EXAMPLE = """example:
  udacisense compare runs/seed runs/mobile --output runs/compare"""


def add_commands(commands) -> None:
    run = add_command(commands, "run", "run a recipe: baseline, compression stages, export, targets and report", RUN_EXAMPLE, run_recipe)
    _recipe_arguments(run)
    _run_folder_arguments(run, "the recipe's name", "continue runs/<name>/: reuse finished stages whose config is unchanged")
    run.add_argument("--strict", action="store_true", help="exit with status 1 when any target is missed (an artifact that fails "
                     "validation always fails the run)")
    run.add_argument("--retime", action="store_true", help="with --resume: measure every latency again (e.g. on a quiet machine)")
    nproc_argument(run)
    run.add_argument("--track", choices=["mlflow"], help="log the run to MLflow (the recipe's tracking: section; store: "
                     "$MLFLOW_TRACKING_URI or SQLite in <runs-dir>/mlflow)")

    check = add_command(commands, "check", "validate a recipe without running it", "example:\n  udacisense check mobile", run_check)
    _recipe_arguments(check)
    add_command(commands, "recipes", "list the shipped recipes and the registered stages", "example:\n  udacisense recipes", run_recipes)

    search = add_command(commands, "search", "search compression recipes (drawn from every registered stage) for the most accurate, "
                         "fastest and smallest artifacts within constraints", SEARCH_EXAMPLE, run_search)
    search.add_argument("recipe", nargs="?", help="a recipe whose data, baseline and search: section to use (default: --checkpoint alone)")
    search.add_argument("--checkpoint", type=Path, help="the fp32 baseline checkpoint to compress")
    search.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides", help="override a recipe value, e.g. data.root=...")
    search.add_argument("--budget", help="search time: 600s, 90m, 2h (a resumed search counts on)")
    search.add_argument("--trials", type=int, help="stop after this many trials")
    search.add_argument("--max-drop", type=float, help="constraint: validation top-1 drop, points (default 1.0)")
    search.add_argument("--max-latency-ms", type=float, help="constraint: the trial's artifact p50 at batch 1, 1 thread")
    search.add_argument("--max-size-mb", type=float, help="constraint: the trial's artifact file size")
    search.add_argument("--proxy-epochs", type=int, help="fine-tune epochs of a first trial (default 2)")
    search.add_argument("--full-epochs", type=int, help="fine-tune epochs of a promoted candidate (default 10)")
    search.add_argument("--storage", help="optuna storage shared by several workers, e.g. postgresql://user@host:5432/db")
    search.add_argument("--seed", type=int)
    group = _run_folder_arguments(search, "<recipe>-search, or search",
                                  "continue runs/<name>/search: finished trials are kept, an interrupted one reruns")
    group.add_argument("--show", metavar="NAME", help="print the front of runs/NAME/search and exit")

    compare = add_command(commands, "compare", "compare finished runs side by side, with a Pareto plot", COMPARE_EXAMPLE, run_compare)
    compare.add_argument("runs", type=Path, nargs="+", help="run folders holding result.json")
    compare.add_argument("--output", type=Path, default=Path("runs/compare"), help="folder for compare.md, compare.json and pareto.png")


def _run_folder_arguments(parser: argparse.ArgumentParser, default_name: str, resume_help: str) -> argparse._MutuallyExclusiveGroup:
    """--name, --runs-dir and the --resume/--overwrite choice; returns that group for further exclusive options."""
    parser.add_argument("--name", help=f"run folder name (default: {default_name})")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help=resume_help)
    group.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    return group


def _recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="a recipe YAML file, or the name of a shipped one (see 'udacisense recipes')")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a recipe value: <stage id>.<param>=value or <section>.<key>=value (repeatable)")


def run_recipe(args: argparse.Namespace) -> int:
    from udacisense.pipeline.recipe import load_recipe
    from udacisense.pipeline.runner import require_validated_run, run_pipeline
    from udacisense.report import format_targets

    pipeline = load_recipe(args.recipe, args.overrides + ([f"tracking.backend={args.track}"] if args.track else []))
    if args.retime and not args.resume:
        raise UdaciSenseError("--retime re-measures a finished run; add --resume")
    result = run_pipeline(pipeline, args.runs_dir, resume=args.resume, overwrite=args.overwrite, name=args.name, retime=args.retime)
    if "rank" in result:  # another torchrun rank than 0: rank 0 reports
        return 0
    if result["primary"]:
        print(f"\ntargets, checked on {result['primary']} measured in its runtime on {result['baseline']['test_images']} test images:")
    print(format_targets(result["targets"]))
    print(f"\nreport: {result['report']['html']}  (also {result['report']['markdown']})")
    require_validated_run(result)  # a shipped artifact that failed its check fails the run, --strict or not
    missed = [row["target"] for row in result["targets"] if not row["passed"]]
    return 1 if missed and args.strict else 0


def run_check(args: argparse.Namespace) -> int:
    from udacisense.pipeline.recipe import load_recipe

    pipeline = load_recipe(args.recipe, args.overrides)
    recipe = pipeline.recipe
    baseline = recipe.baseline.checkpoint or f"{recipe.baseline.model} trained {recipe.baseline.train.epochs} epochs"
    print(f"recipe '{recipe.name}' is valid: data {recipe.data.name}, baseline {baseline}")
    for stage in pipeline.stages:
        print(f"  {stage.index}. {stage.id} ({stage.kind})")
    formats = recipe.export.formats
    print(f"  export {', '.join(formats)}; targets checked on {formats[0]}" if formats else "  no export: the run ends at the last stage")
    return 0


def run_recipes(args: argparse.Namespace) -> int:
    from udacisense.pipeline.recipe import list_recipes
    from udacisense.stages import STAGES

    print("recipes (udacisense run NAME):")
    for name, description in list_recipes():
        print(f"  {name:<12} {description}")
    print("stages:")
    for name, stage in STAGES.items():
        print(f"  {name:<19} {stage.summary}")
    return 0


def run_search(args: argparse.Namespace) -> int:
    from udacisense.config import validate_config
    from udacisense.deploy.validate import require_validated
    from udacisense.pipeline.search import Search, search_base, show_search
    from udacisense.pipeline.search_spec import SearchSpec
    from udacisense.report.search import front_table

    if args.show:
        print(show_search(args.runs_dir / args.show))
        return 0
    pipeline = search_base(args.recipe, args.checkpoint, args.overrides)
    given = {field: getattr(args, field) for field in SEARCH_FIELDS if getattr(args, field) is not None}
    spec = validate_config(SearchSpec, (pipeline.recipe.search or SearchSpec()).model_dump() | given, where="search options")
    name = args.name or (f"{pipeline.recipe.name}-search" if args.recipe else "search")
    search = Search(pipeline, spec, args.runs_dir, name, resume=args.resume, overwrite=args.overwrite)
    result = search.run()
    print(front_table(result))
    report = search.folder / "report.md"
    print(f"\nreport: {report}; reproduce a point with: udacisense run <its recipe>")
    failed = [f"front point {point['trial']}: {'; '.join(point['validation_failures'])}" for point in result["front"] if point.get("validation_failures")]
    require_validated(failed, f"report: {report}")  # passed on the validation split in its trial, not on the test split
    return 0 if result["feasible_found"] else 1


def run_compare(args: argparse.Namespace) -> int:
    from udacisense.report.compare import compare_runs

    table, paths = compare_runs(args.runs, args.output)
    print(table)
    print(f"-> {paths['markdown']}, {paths['plot']}")
    return 0
