"""Which training defaults work on a user's model as well as on ours? Models x data sets x settings.

    python benchmarks/train_defaults.py                      # every row (about 40 minutes on 2 CPU cores)
    python benchmarks/train_defaults.py --only two_conv      # rows whose model name contains 'two_conv'

Models: MobileNetV3-Small, ResNet-18, and a user's plain two-convolution CNN from a file (PyTorch's
MNIST example: no BatchNorm, dropout). Data: a digits-like ImageFolder of pen strokes (1,400 training
images, written by ``udacisense.data.strokes``, 28 px grey) and 6,000 Fashion-MNIST images. Settings:
the defaults before issue 13 (lr 0.1, crop + flip everywhere), and the candidates. A run that fails its
training check is a row too, with the reason. Results go to benchmarks/results/train_defaults.json and
the "train-defaults" section of docs/benchmarks.md; a finished row is not rerun.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe_machine, load_results, machine, replace_doc_section, save_results  # noqa: E402
from udacisense.config import RunConfig  # noqa: E402
from udacisense.data.strokes import write_stroke_digits  # noqa: E402
from udacisense.errors import TrainingFailed  # noqa: E402
from udacisense.train import train_run  # noqa: E402

RUNS_DIR = Path("runs/benchmarks/train_defaults")
TWO_CONV = str(Path(__file__).resolve().parent / "user_models" / "two_conv.py") + ":TwoConvNet"
MODELS = {"two_conv (user file)": (TWO_CONV, 30), "mobilenet_v3_small": ("mobilenet_v3_small", 30), "resnet18": ("resnet18", 10)}
SETTINGS = {  # every setting spelled out, so that the rows keep their meaning when the defaults change
    "before (lr 0.1, crop+flip)": {"train": {"lr": 0.1, "grad_clip_norm": None}, "data": {"augment": "crop,flip"}},
    "lr 0.1, data-set augmentation": {"train": {"lr": 0.1, "grad_clip_norm": None}, "data": {}},
    "lr 0.1, clip 1, data-set augmentation": {"train": {"lr": 0.1, "grad_clip_norm": 1.0}, "data": {}},
    "lr auto, data-set augmentation": {"train": {"lr": "auto", "grad_clip_norm": None}, "data": {}},
}


def data_sets(root: Path) -> dict[str, dict]:
    strokes = root / "stroke_digits"
    if not (strokes / "test").is_dir():
        write_stroke_digits(strokes, train_per_class=140, test_per_class=100)
    return {
        "stroke digits (ImageFolder, 1,400)": {"name": "imagefolder", "root": str(strokes), "channels": 1, "image_size": 28},
        "Fashion-MNIST (6,000)": {"name": "fashion-mnist", "train_subset": 6000},
    }


def run_row(model: str, epochs: int, data: dict, setting: dict, name: str) -> dict:
    epochs_here = epochs if data["name"] == "imagefolder" else max(1, epochs // 3)
    config = RunConfig.model_validate({
        "name": name, "runs_dir": RUNS_DIR, "model": {"name": model},
        "data": data | setting["data"], "train": {"epochs": epochs_here, **setting["train"]},
    })
    started = time.time()
    try:
        summary = train_run(config, overwrite=True)
        outcome = {"status": "ok", "test_top1": summary["test_top1"], "reason": ""}
    except TrainingFailed as failure:
        outcome = {"status": "failed", "test_top1": None, "reason": str(failure).split(";")[0]}
    lr_file = RUNS_DIR / name / "lr_range.json"
    return outcome | {
        "epochs": epochs_here,
        "lr": setting["train"]["lr"] if not lr_file.exists() else round(__import__("json").loads(lr_file.read_text())["lr"], 4),
        "minutes": (time.time() - started) / 60,
    }


def render(results: dict) -> str:
    info = results["machine"]
    lines = [
        "## Training defaults on three models and two data sets (issue 13)",
        "",
        f"`python benchmarks/train_defaults.py` on {describe_machine(info)}. "
        "SGD + Nesterov, one-cycle, label smoothing 0.1, batch 128; test top-1 on the data set's test split. 'failed' is the "
        "training check of `udacisense.health` (the run exits 1), with its reason.",
        "",
        "| model | data | setting | epochs | peak lr | test top-1 | minutes |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"].values():
        top1 = f"{row['test_top1']:.2f}%" if row["status"] == "ok" else f"**failed**: {row['reason']}"
        lines.append(f"| {row['model']} | {row['data']} | {row['setting']} | {row['epochs']} | {row['lr']} | {top1} | {row['minutes']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="run only rows whose model, data or setting contains this text")
    parser.add_argument("--again", action="store_true", help="rerun rows that already have results")
    args = parser.parse_args()
    results = load_results("train_defaults")
    results.setdefault("rows", {})
    for data_name, data in data_sets(RUNS_DIR).items():
        for model_name, (model, epochs) in MODELS.items():
            for setting_name, setting in SETTINGS.items():
                key = f"{model_name} | {data_name} | {setting_name}"
                if args.only not in key or (key in results["rows"] and not args.again):
                    continue
                name = f"{len(results['rows']):02d}_" + "".join(c if c.isalnum() else "_" for c in key)[:60]
                row = {"model": model_name, "data": data_name, "setting": setting_name} | run_row(model, epochs, data, setting, name)
                results["rows"][key] = row
                results["machine"] = machine()
                save_results("train_defaults", results)
                replace_doc_section("train-defaults", render(results))
                print(f"{key}: {row['status']} {row['test_top1']} ({row['minutes']:.1f} min)", flush=True)


if __name__ == "__main__":
    main()
