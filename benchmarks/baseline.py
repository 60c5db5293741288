"""Full-length baselines on Fashion-MNIST: test top-1, size, MACs, latency, training throughput.

    python benchmarks/baseline.py                                   # the defaults below
    python benchmarks/baseline.py --models mobilenet_v3_small:40 resnet18:30
    python benchmarks/baseline.py --recipe strong --models mobilenet_v3_small:150 --runs-dir /work/bench-runs

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

from common import describe_machine, load_results, machine, replace_doc_section, save_results  # noqa: E402
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


def run_one(model: str, epochs: int, train_subset: int | None, recipe: str, runs_dir: Path) -> dict:
    config = RunConfig(
        name=f"baseline_{model}" + ("" if recipe == "default" else f"_{recipe}"),
        runs_dir=runs_dir,
        data=DataConfig(name="fashion-mnist", train_subset=train_subset, **RECIPES[recipe]["data"]),
        model={"name": model},
        train=TrainConfig(epochs=epochs, **RECIPES[recipe]["train"]),
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
        "wall_minutes": (time.time() - started) / 60,
        "checkpoint": str(config.runs_dir / config.name / "best.pt"),
        "command": f"python benchmarks/baseline.py --models {model}:{epochs}"
        + (f" --recipe {recipe}" if recipe != "default" else "")
        + (f" --train-subset {train_subset}" if train_subset else ""),
        "resumed": resume,
    }


def render(results: dict) -> str:
    info = results["machine"]
    lines = [
        "## Baselines (Fashion-MNIST, 28 px, full 10,000-image test set)",
        "",
        f"Machine: {describe_machine(info)}. "
        "Training: SGD + Nesterov, one-cycle, label smoothing 0.1, batch 128, padded crop + flip; the strong recipe adds "
        "random erasing and a weight EMA (0.9995). Latency: batch 1, eager PyTorch, p50 of 300 runs.",
        "",
        "| model | recipe | train images | epochs | test top-1 | params | size | MACs | latency 1 thread | latency all threads | train img/s | wall time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"].values():
        latency = list(row["latency_ms"].values())
        lines.append(
            f"| {row['model']} | {row.get('recipe', PRE_ISSUE_13)} | {row['train_images']:,} | {row['epochs']} | {row['test_top1']:.2f}% | "
            f"{row['params'] / 1e6:.2f} M | "
            f"{row['size_bytes'] / 1e6:.2f} MB | {row['macs'] / 1e6:.1f} M | {latency[0]:.2f} ms | {latency[-1]:.2f} ms | "
            f"{row['train_images_per_second']:.0f} | {row['wall_minutes']:.0f} min |"
        )
    lines += ["", "Commands (each reproduces its checkpoint in runs/benchmarks/):", ""]
    lines += [f"    {row['command']}" for row in results["rows"].values()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="name:epochs pairs")
    parser.add_argument("--train-subset", type=int, help="train on fewer images (smoke runs)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="default")
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR, help="where the run folders go (resumable; outside the work tree for long runs)")
    args = parser.parse_args()
    results = load_results("baseline")
    results.setdefault("rows", {})
    for item in args.models:
        model, _, epochs = item.partition(":")
        row = run_one(model, int(epochs or 30), args.train_subset, args.recipe, args.runs_dir)
        results["rows"][model if args.recipe == "default" else f"{model}_{args.recipe}"] = row
        results["machine"] = machine()
        save_results("baseline", results)
        replace_doc_section("baseline", render(results))
        print(f"{model}: {row['test_top1']:.2f}% after {row['epochs']} epochs ({row['wall_minutes']:.1f} min)")


if __name__ == "__main__":
    main()
