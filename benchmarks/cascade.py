"""Progressive distillation against direct distillation against none, at equal training epochs, several seeds.

    python benchmarks/cascade.py [--teacher mobilenet_v3_large] [--teacher-epochs 8] [--assistant mobilenet_v3_small]
                                 [--student mobilenet_v3_small@0.5] [--epochs 10] [--seeds 0,1,2] [--train-subset 12000]
                                 [--runs-dir runs/benchmarks/cascade]

A teacher is trained once (``udacisense train``'s defaults). Then, for each seed, the student (NAME or NAME@WIDTH)
is trained three ways through the same ``distill`` stage and runner as a recipe, with the same total epochs:

- none: labels only (alpha 0: the distillation loss is then the training's label-smoothed cross-entropy alone);
- direct: distilled from the teacher for all the epochs;
- cascade: the assistant is distilled from the teacher for half the epochs, then the student from the assistant
  (``teacher: previous``) for the other half (cascade.yaml's shape).

Top-1 of the fp32 student on the whole Fashion-MNIST test split; mean and sample standard deviation over the seeds.
Every run is resumable (run the same command again). Writes benchmarks/results/cascade.json and the "cascade" section
of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_results, provenance, provenance_line, replace_doc_section, save_results  # noqa: E402

ARMS = ("none", "direct", "cascade")


def student_spec(spec: str) -> dict:
    """NAME or NAME@WIDTH -> the distill stage's student."""
    name, _, width = spec.partition("@")
    return {"model": name, "model_kwargs": {"width_mult": float(width)} if width else {}}


def train_teacher(args: argparse.Namespace) -> dict:
    from udacisense.config import DataConfig, RunConfig, TrainConfig
    from udacisense.train import train_run

    run = args.runs_dir / "teacher"
    if (run / "metrics.json").is_file():
        return json.loads((run / "metrics.json").read_text())
    config = RunConfig(name="teacher", runs_dir=args.runs_dir, data=DataConfig(name="fashion-mnist", train_subset=args.train_subset),
                       model={"name": args.teacher}, train=TrainConfig(epochs=args.teacher_epochs))
    return train_run(config, resume=(run / "last.pt").is_file())


def arm_stages(arm: str, args: argparse.Namespace, seed: int) -> list[dict]:
    """The arm's distill stages, ``args.epochs`` training epochs in all."""
    def distill(stage_id: str, teacher: str, student: str, epochs: int, **soft_targets) -> dict:
        return {"stage": "distill", "id": stage_id, "teacher": teacher, "student": student_spec(student),
                "train": {"epochs": epochs, "seed": seed}, **soft_targets}

    if arm == "none":
        return [distill("student", "baseline", args.student, args.epochs, alpha=0.0)]
    if arm == "direct":
        return [distill("student", "baseline", args.student, args.epochs)]
    first = args.epochs // 2
    return [distill("assistant", "baseline", args.assistant, first), distill("student", "previous", args.student, args.epochs - first)]


def run_arm(arm: str, seed: int, teacher: Path, args: argparse.Namespace) -> dict:
    from udacisense.pipeline.recipe import validate_recipe
    from udacisense.pipeline.runner import run_pipeline

    name = f"{arm}_seed{seed}"
    raw = {"name": name, "data": {"name": "fashion-mnist", "train_subset": args.train_subset}, "baseline": {"checkpoint": str(teacher)},
           "stages": arm_stages(arm, args, seed), "export": {"formats": []}}
    started = time.time()
    result = run_pipeline(validate_recipe(raw), args.runs_dir, resume=(args.runs_dir / name).is_dir(), report=False)
    stages = result["stages"]
    return {"arm": arm, "seed": seed, "test_top1": stages[-1]["metrics"]["test_top1"],
            "assistant_top1": stages[0]["metrics"]["test_top1"] if arm == "cascade" else None,
            "train_seconds": round(sum(row.get("wall_seconds") or row["seconds"] for stage in stages for row in stage["info"]["history"]), 1),
            "wall_seconds": round(time.time() - started, 1)}


def render(result: dict) -> str:
    by_arm = {arm: [row for row in result["rows"] if row["arm"] == arm] for arm in ARMS}

    def mean_std(values: list[float]) -> str:
        spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        return f"{statistics.mean(values):.2f}%{spread}"

    half = result["epochs"] // 2
    how = {"none": f"{result['epochs']} epochs on the labels alone", "direct": f"{result['epochs']} epochs distilled from the teacher",
           "cascade": f"assistant {half} epochs from the teacher, then student {result['epochs'] - half} epochs from the assistant"}
    rows = [f"| {arm} | {how[arm]} | {mean_std([row['test_top1'] for row in rows])} | "
            f"{', '.join(format(row['test_top1'], '.2f') + '%' for row in rows)} | {statistics.mean(row['train_seconds'] for row in rows) / 60:.1f} min |"
            for arm, rows in by_arm.items() if rows]
    assistants = [row["assistant_top1"] for row in by_arm["cascade"]]
    return "\n".join([
        "### 3.4 Progressive distillation at equal training epochs",
        "",
        f"{provenance_line(result)} "
        f"Teacher {result['teacher']} trained {result['teacher_epochs']} epochs ({result['teacher_top1']:.2f}% test top-1); "
        f"student {result['student']}, assistant {result['assistant']}; {result['train_subset']:,} training images, "
        f"{result['epochs']} training epochs per arm in all, the `distill` stage's defaults (T = 4, α = 0.7, one-cycle). "
        f"Top-1 of the fp32 student on all 10,000 test images; mean ± sample standard deviation over seeds {result['seeds']}.",
        "",
        "| arm | training | student top-1 | per seed | training time (mean) |",
        "|---|---|---:|---|---:|",
        *rows,
        "",
        f"The assistants reached {mean_std(assistants)}." if assistants else "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="mobilenet_v3_large")
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--assistant", default="mobilenet_v3_small")
    parser.add_argument("--student", default="mobilenet_v3_small@0.5")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of each arm in all")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--train-subset", type=int, default=12000)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/benchmarks/cascade"))
    parser.add_argument("--render", action="store_true", help="only rewrite the docs section from stored results")
    args = parser.parse_args()
    if args.render:
        result = load_results("cascade")
    else:
        if args.epochs < 2:
            parser.error("--epochs must be at least 2: the cascade splits them between the assistant and the student")
        teacher = train_teacher(args)
        seeds = [int(seed) for seed in args.seeds.split(",")]
        options = [f"--{name.replace('_', '-')} {getattr(args, name)}" for name in ("teacher", "teacher_epochs", "assistant", "student", "epochs",
                                                                                    "seeds", "train_subset")
                   if getattr(args, name) != parser.get_default(name)]
        result = provenance() | {"command": " ".join(["python benchmarks/cascade.py", *options]),
                                 "teacher": args.teacher, "teacher_epochs": args.teacher_epochs, "teacher_top1": teacher["test_top1"],
                                 "assistant": args.assistant, "student": args.student, "epochs": args.epochs, "seeds": seeds,
                                 "train_subset": args.train_subset, "rows": []}
        for seed in seeds:
            for arm in ARMS:
                result["rows"].append(run_arm(arm, seed, args.runs_dir / "teacher" / "best.pt", args))
                save_results("cascade", result)
                print(render(result), flush=True)
    replace_doc_section("cascade", render(result))
    print(render(result))


if __name__ == "__main__":
    main()
