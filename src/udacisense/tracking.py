"""Experiment tracking: a training run or a pipeline logged to MLflow, if asked (``--track mlflow``, a recipe's
``tracking:`` section).

What is logged: the resolved config as parameters, every epoch's loss, accuracy, learning rate and throughput (the
baseline's and each stage's fine-tune, prefixed by the stage id), each stage's measured metrics, and at the end the
report, ``result.json`` and the bundle as artifacts. The default store is a SQLite file in ``<runs_dir>/mlflow``
(no server; MLflow 3 keeps its plain-folder store in maintenance mode); ``MLFLOW_TRACKING_URI`` or ``tracking.uri``
points elsewhere, e.g. at a tracking server. A resumed run continues the same MLflow run (its id is kept in the run
folder). MLflow is an optional dependency: ``pip install 'udacisense[mlflow]'``.

``fit`` reports through :func:`log_epoch` without knowing whether anything listens: the tracker of the run in progress
is a context variable, as the latency probe's thread counts are.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterator

from udacisense.config import TrackingConfig
from udacisense.errors import UdaciSenseError, first_line
from udacisense.io import write_json

RUN_ID_FILE = "tracking.json"


class MlflowTracker:
    """One MLflow run, written through the client API (no global active run, so nested tools cannot clash)."""

    def __init__(self, config: TrackingConfig, run_dir: Path, run_name: str) -> None:
        require_backend(config)
        from mlflow.tracking import MlflowClient

        for noisy in ("alembic", "mlflow.store.db.utils"):  # a new SQLite store narrates its table migrations at INFO
            logging.getLogger(noisy).setLevel(logging.WARNING)
        store = run_dir.parent / "mlflow"
        default = f"sqlite:///{(store / 'mlflow.db').resolve()}"
        self.uri = config.uri or os.environ.get("MLFLOW_TRACKING_URI") or default
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(self.uri)
        experiment = self.client.get_experiment_by_name(config.experiment)
        if experiment is None:
            artifacts = (store / "artifacts").resolve().as_uri() if self.uri == default else None  # elsewhere: the store's own place
            experiment_id = self.client.create_experiment(config.experiment, artifact_location=artifacts)
        else:
            experiment_id = experiment.experiment_id
        saved = run_dir / RUN_ID_FILE
        previous = json.loads(saved.read_text()) if saved.is_file() else {}
        if previous.get("uri") == self.uri and self._exists(previous.get("run_id")):
            self.run_id = previous["run_id"]  # a resumed run continues its MLflow run
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags={"udacisense.run_dir": str(run_dir)}).info.run_id
            write_json(saved, {"uri": self.uri, "run_id": self.run_id, "experiment": config.experiment})

    def _exists(self, run_id: str | None) -> bool:
        if not run_id:
            return False
        try:
            self.client.get_run(run_id)
            return True
        except Exception:  # deleted, or another store
            return False

    def log_params(self, params: dict[str, Any]) -> None:
        """Flattened ``a.b.c`` parameters; on a resumed run only new keys (MLflow parameters cannot change)."""
        from mlflow.entities import Param

        known = self.client.get_run(self.run_id).data.params
        flat = {key: str(value)[:6000] for key, value in _flatten(params).items() if key not in known}
        items = [Param(key, value) for key, value in flat.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = [Metric(key, float(value), now, step or 0) for key, value in metrics.items() if isinstance(value, (int, float))]
        if values:
            self.client.log_batch(self.run_id, metrics=values)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), folder or path.name)
        elif path.is_file():
            self.client.log_artifact(self.run_id, str(path), folder)

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)


def require_backend(config: TrackingConfig) -> None:
    """One line before any work when the tracking backend asked for is not installed."""
    if config.backend == "mlflow":
        try:
            import mlflow.tracking  # noqa: F401
        except ImportError:
            raise UdaciSenseError("tracking with MLflow needs it installed: pip install 'udacisense[mlflow]'") from None


_TRACKER: ContextVar[MlflowTracker | None] = ContextVar("udacisense_tracker", default=None)
_PREFIX: ContextVar[str] = ContextVar("udacisense_metric_prefix", default="")


@contextmanager
def tracked(config: TrackingConfig, run_dir: Path, params: dict[str, Any]) -> Iterator[MlflowTracker | None]:
    """Log everything inside the block to one MLflow run (nothing when ``config.backend`` is None); a block that
    raises ends the run as FAILED."""
    if config.backend is None:
        yield None
        return
    try:
        tracker = MlflowTracker(config, run_dir, run_dir.name)
        tracker.log_params(params)
    except UdaciSenseError:
        raise
    except Exception as error:  # an unreachable server, a store it cannot open: the user's setting, not a bug
        raise UdaciSenseError(f"MLflow tracking failed to start ({first_line(error, 200)}); check tracking.uri or MLFLOW_TRACKING_URI, or drop --track") from None
    token = _TRACKER.set(tracker)
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    finally:
        _TRACKER.reset(token)
        tracker.end(status)


@contextmanager
def metric_prefix(prefix: str) -> Iterator[None]:
    """Epoch metrics logged inside the block are named ``<prefix>/<metric>`` (a pipeline stage's id)."""
    token = _PREFIX.set(f"{prefix}/")
    try:
        yield
    finally:
        _PREFIX.reset(token)


def log_metrics(metrics: dict[str, Any], step: int | None = None) -> None:
    """Numbers to the run in progress, under the current prefix; nothing when no run is tracked."""
    tracker = _TRACKER.get()
    if tracker is not None:
        prefix = _PREFIX.get()
        tracker.log_metrics({prefix + key: value for key, value in metrics.items() if value is not None}, step)


def log_artifacts(*paths: Path) -> None:
    """Files or folders to the run in progress (folders keep their name); nothing when no run is tracked."""
    tracker = _TRACKER.get()
    if tracker is not None:
        for path in paths:
            tracker.log_artifact(path)


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat |= _flatten(value, f"{prefix}{key}.")
        elif isinstance(value, (list, tuple)) and value and all(isinstance(item, dict) for item in value):  # a recipe's stages
            flat |= _flatten({str(item.get("id", index)): item for index, item in enumerate(value)}, f"{prefix}{key}.")
        else:
            flat[prefix + str(key)] = json.dumps(value) if isinstance(value, (list, tuple)) else value
    return flat
