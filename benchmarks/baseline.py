"""Full-length baselines on Fashion-MNIST: test top-1, size, MACs, latency, training throughput.

    python benchmarks/baseline.py                                   # the defaults below
    python benchmarks/baseline.py --models mobilenet_v3_small:40 resnet18:30
    python benchmarks/baseline.py --recipe strong --models mobilenet_v3_small:150 --runs-dir runs/benchmarks

Each model trains in <runs-dir>/baseline_<model>[_<recipe>]/ (resumable: rerun the same command
after an interruption; put long runs outside the work tree), results go to
benchmarks/results/baseline.json as each model finishes, and the "baseline" section of
docs/benchmarks.md is regenerated from them.

Recipes: "default" is `udacisense train` with its defaults. "strong" (issue 13) adds random erasing
to crop + flip, an exponential moving average of the weights (decay 0.9995, the model that is
validated and saved), and a long one-cycle schedule (warm-up, then cosine annealing) at the same
peak learning rate and label smoothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe_machine, head_commit, load_results, machine, replace_doc_section, save_results  # noqa: E402
from udacisense.checkpoint import load_model  # noqa: E402
from udacisense.config import DataConfig, RunConfig, TrainConfig  # noqa: E402
from udacisense.data import augmentation  # noqa: E402
from udacisense.profile import profile_model  # noqa: E402
from udacisense.train import resolve_device, train_run  # noqa: E402

DEFAULT_MODELS = ["mobilenet_v3_small:40", "mobilenet_v3_large:40", "resnet18:30"]
RUNS_DIR = Path("runs/benchmarks")
PRE_ISSUE_13 = "default before issue 13 (no clipping)"  # rows measured before recipes were recorded
RECIPES = {
    "default": {"data": {}, "train": {}},
    "strong": {"data": {"augment": ("crop", "flip", "erasing")}, "train": {"ema_decay": 0.9995}},
}


def row_name(model: str, recipe: str, batch_size: int | None, train_subset: int | None = None) -> str:
    """The run folder's and the results row's name: model, then what differs from the defaults."""
    return (model + ("" if recipe == "default" else f"_{recipe}") + ("" if batch_size is None else f"_b{batch_size}")
            + ("" if train_subset is None else f"_s{train_subset}"))


def run_one(model: str, epochs: int, train_subset: int | None, recipe: str, runs_dir: Path,
            batch_size: int | None = None, lr: float | None = None, compile: bool = False) -> dict:
    overrides = {key: value for key, value in {"batch_size": batch_size, "lr": lr}.items() if value is not None}
    config = RunConfig(
        name=f"baseline_{row_name(model, recipe, batch_size, train_subset)}",
        runs_dir=runs_dir,
        data=DataConfig(name="fashion-mnist", train_subset=train_subset, **RECIPES[recipe]["data"]),
        model={"name": model},
        train=TrainConfig(epochs=epochs, compile=compile, **RECIPES[recipe]["train"], **overrides),
    )
    resume = (config.runs_dir / config.name / "last.pt").exists()
    started = time.time()
    summary = train_run(config, resume=resume)
    network, payload = load_model(config.runs_dir / config.name / "best.pt")
    profile = profile_model(network, tuple(payload["input"]["shape"]), runs=300)
    return {
        "model": model,
        "recipe": recipe,
        "augment": list(augmentation(config.data)),
        "train": config.train.model_dump(mode="json", exclude={"threads", "device", "amp", "channels_last", "eval_batch_size"}),
        "device": str(resolve_device(config.train.device)),
        "epochs": epochs,
        "train_images": 54000 if train_subset is None else train_subset,
        "test_top1": summary["test_top1"],
        "best_epoch": summary["best_epoch"],
        "params": profile["parameters"]["total"],
        "size_bytes": profile["size"]["bytes"],
        "macs": profile["macs"],
        "latency_ms": {key: value["p50_ms"] for key, value in profile["latency"].items()},
        "memory_bytes": (profile["memory"] or {}).get("model_bytes"),
        "train_images_per_second": summary["train_images_per_second"],
        "wall_minutes": (time.time() - started) / 60,  # this invocation only
        "train_minutes": summary["train_seconds"] / 60,  # every epoch, over every invocation (a run resumed across sessions)
        "checkpoint": str(config.runs_dir / config.name / "best.pt"),
        "command": f"python benchmarks/baseline.py --models {model}:{epochs}"
        + (f" --recipe {recipe}" if recipe != "default" else "")
        + (f" --train-subset {train_subset}" if train_subset else "")
        + "".join(f" --{key.replace('_', '-')} {value}" for key, value in overrides.items()),
        "resumed": resume,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "commit": head_commit(),
    }


def render(results: dict) -> str:
    # Rows carry the machine they ran on (older rows: the file's one machine); number the distinct ones.
    machines = list(dict.fromkeys(describe_machine(row.get("machine", results["machine"])) for row in results["rows"].values()))
    lines = [
        "### Fashion-MNIST, 28 px, full 10,000-image test set",
        "",
        "Machines: " + "; ".join(f"[{number}] {text}" for number, text in enumerate(machines, 1)) + ". "
        "Training: SGD + Nesterov, one-cycle, label smoothing 0.1, batch 128 and peak lr 0.1 unless the row's recipe "
        "names another batch (then lr scaled linearly), padded crop + flip; the strong recipe adds random erasing and a "
        "weight EMA (0.9995). Latency: batch 1, eager PyTorch on the machine's CPU, p50 of 300 runs.",
        "",
        "| model | recipe | machine | date, commit | train images | epochs | test top-1 | params | size | MACs | latency 1 thread "
        "| latency all threads | train img/s | training time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"].values():
        latency = list(row["latency_ms"].values())
        where = machines.index(describe_machine(row.get("machine", results["machine"]))) + 1
        recipe = row.get("recipe", PRE_ISSUE_13) + (f", batch {row['train']['batch_size']}" if row.get("train", {}).get("batch_size", 128) != 128 else "")
        lines.append(
            f"| {row['model']} | {recipe} | [{where}] | {row['date']}, {row['commit']} | {row['train_images']:,} | {row['epochs']} | {row['test_top1']:.2f}% | "
            f"{row['params'] / 1e6:.2f} M | "
            f"{row['size_bytes'] / 1e6:.2f} MB | {row['macs'] / 1e6:.1f} M | {latency[0]:.2f} ms | {latency[-1]:.2f} ms | "
            f"{row['train_images_per_second']:.0f} | {_training_time(row)} |"
        )
    lines += ["", "Commands (each reproduces its checkpoint in runs/benchmarks/):", ""]
    lines += [f"    {row['command']}" for row in results["rows"].values()]
    return "\n".join(lines)


def _training_time(row: dict) -> str:
    """The sum of a run's epochs over every invocation; rows recorded before that was kept give their one invocation's
    wall time, and say so."""
    return f"{row['train_minutes']:.0f} min" if "train_minutes" in row else f"{row['wall_minutes']:.0f} min (wall)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="name:epochs pairs")
    parser.add_argument("--train-subset", type=int, help="train on fewer images (smoke runs)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="default")
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR, help="where the run folders go (resumable; outside the work tree for long runs)")
    parser.add_argument("--batch-size", type=int, help="override the recipe's batch size (the run and row names record it)")
    parser.add_argument("--lr", type=float, help="override the peak learning rate (scale it with the batch size)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training step (on a GPU; a run may resume with or without it)")
    args = parser.parse_args()
    for item in args.models:
        model, _, epochs = item.partition(":")
        row = run_one(model, int(epochs or 30), args.train_subset, args.recipe, args.runs_dir, args.batch_size, args.lr, args.compile)
        results = load_results("baseline")  # read late: runs in parallel processes each add their own row
        results.setdefault("rows", {})[row_name(model, args.recipe, args.batch_size, args.train_subset)] = row
        save_results("baseline", results)
        replace_doc_section("baseline", render(results))
        print(f"{model}: {row['test_top1']:.2f}% after {row['epochs']} epochs ({row['wall_minutes']:.1f} min)")


if __name__ == "__main__":
    main()
