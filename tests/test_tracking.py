"""MLflow tracking: a training run and a pipeline run logged to the local store (SQLite in runs/mlflow), read back with
MLflow's own client.

mlflow-skinny is a pinned dev dependency (pip install -e '.[dev]'): without it the tests that read the store fail, they
never skip. It is imported where it is read, so that the test of a machine without MLflow runs either way."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from conftest import above_chance
from udacisense.cli import main
from udacisense.config import DataConfig
from udacisense.data import get_dataset


def _client(runs: Path):
    from mlflow.tracking import MlflowClient  # a plain import: a missing dev dependency is a failure

    client = MlflowClient(f"sqlite:///{(runs / 'mlflow' / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("udacisense")
    assert experiment is not None
    return client, client.search_runs([experiment.experiment_id])


@pytest.fixture(autouse=True)
def local_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default store, whatever the machine says


def test_train_track_mlflow_logs_params_every_epoch_and_the_test_result(tmp_path, user_model_file, capsys):
    argv = ["train", "--data", "synthetic", "--val-fraction", "0.2", "--model", f"{user_model_file}:TinyNet", "--epochs", "3",
            "--batch-size", "16", "--lr", "0.05", "--threads", "1", "--runs-dir", str(tmp_path), "--name", "tracked", "--track", "mlflow"]
    assert main(argv) == 0
    client, runs = _client(tmp_path)
    assert len(runs) == 1 and runs[0].info.run_name == "tracked" and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.params["train.epochs"] == "3" and run.data.params["model.name"].endswith(":TinyNet")
    losses = client.get_metric_history(run.info.run_id, "train_loss")
    assert [metric.step for metric in losses] == [1, 2, 3]
    metrics = (tmp_path / "tracked" / "metrics.json").read_text()
    assert f"{run.data.metrics['test_top1']}"[:6] in metrics  # the number the run folder holds
    assert {artifact.path for artifact in client.list_artifacts(run.info.run_id)} >= {"metrics.json", "train.log", "eval.json"}


def test_run_track_mlflow_logs_stage_metrics_fine_tune_epochs_and_the_report(tmp_path, tiny_baseline, real_fashion_mnist, capsys):
    recipe = {"name": "tracked-run", "threads": 1, "data": {"root": str(real_fashion_mnist), "train_subset": 2000, "test_subset": 500},
              "baseline": {"checkpoint": str(tiny_baseline)},
              "stages": [{"stage": "prune_channels", "id": "prune", "ratio": 0.5, "fine_tune": {"epochs": 2, "batch_size": 64}}],
              "export": {"formats": [], "latency_runs": 10}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--runs-dir", str(tmp_path), "--track", "mlflow"]) == 0
    client, runs = _client(tmp_path)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.params["stages.prune.ratio"] == "0.5" and run.data.params["baseline.checkpoint"] == str(tiny_baseline)
    assert [metric.step for metric in client.get_metric_history(run.info.run_id, "prune/train_loss")] == [1, 2]
    assert run.data.metrics["prune/parameters"] < 0.5 * run.data.metrics["baseline/parameters"]
    # the logged top-1 is a working model's: 60.2% measured (baseline 65.0%) on the run's own 500 test images, whose chance
    # level is 13.0%; 30 points over it is far beyond luck (p = 1e-6 at 20.6%) and 17 points under the measurement
    test = get_dataset(DataConfig(**recipe["data"])).test
    assert above_chance(test.labels, 10, 30) < run.data.metrics["prune/test_top1"] <= 100
    names = {artifact.path for artifact in client.list_artifacts(run.info.run_id)}
    assert {"report.md", "report.html", "result.json", "recipe.yaml"} <= names
    report = Path(client.download_artifacts(run.info.run_id, "report.md", str(tmp_path / "downloaded")))
    assert report.read_text() == (tmp_path / "tracked-run" / "report.md").read_text()


def test_tracking_without_mlflow_installed_is_one_line_with_exit_2(tmp_path, user_model_file, monkeypatch, capsys):
    for module in [name for name in sys.modules if name == "mlflow" or name.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now fails, as without the extra
    argv = ["train", "--data", "synthetic", "--model", f"{user_model_file}:TinyNet", "--epochs", "1", "--runs-dir", str(tmp_path),
            "--track", "mlflow"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'udacisense[mlflow]'" in err and "\n" not in err


def test_a_tracking_store_that_cannot_open_is_one_line_with_exit_2(tmp_path, user_model_file, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://nowhere")
    argv = ["train", "--data", "synthetic", "--model", f"{user_model_file}:TinyNet", "--epochs", "1", "--runs-dir", str(tmp_path),
            "--track", "mlflow"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("udacisense: error: MLflow tracking failed to start") and "\n" not in err
