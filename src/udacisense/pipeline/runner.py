"""Run a recipe: baseline -> stages -> export -> targets -> report, in ``runs/<name>/``.

After every stage the runner writes the stage's checkpoint (atomically), measures it on the whole
test split and appends one line to ``stages.jsonl``. Each line carries a hash of the stage's
configuration chained with every stage before it, so ``--resume`` reuses exactly the finished
stages whose configuration is unchanged and reruns the rest (an interrupted fine-tune continues
from its last epoch). Targets are checked on the first export format, measured in its runtime; a
recipe with no export formats ends at the last stage's checkpoint or artifact, with no targets.

The compression commands (``udacisense prune`` and the others) are one-stage recipes run here, so a
stage run from the command line and from a recipe share every step and every number.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import yaml

from udacisense import distributed, tracking
from udacisense.bundle.build import build_bundle, remove_bundle, retime_bundle
from udacisense.bundle.signing import SIGNATURE_FILE, sign_bundle
from udacisense.bundle.variants import VariantSource, build_variant_bundle, retime_variant_bundle
from udacisense.checkpoint import load_model, save_checkpoint
from udacisense.config import DataConfig, TrackingConfig
from udacisense.data import ImageDataset, Normalization, get_dataset
from udacisense.deploy.bench import bench_artifact
from udacisense.deploy.validate import require_validated, validation_failures
from udacisense.errors import CompressionFailed, TrainingFailed
from udacisense.formats import FORMATS
from udacisense.health import judge_training
from udacisense.io import atomic_write, config_hash, sha256_of, write_json
from udacisense.measure import measure_artifact, model_metrics, p50, source_logits, stage_metrics
from udacisense.pipeline.recipe import Pipeline, Recipe, Targets
from udacisense.profile import machine_info
from udacisense.report import write_failure_report, write_report
from udacisense.runs import FILE_ONLY, RESULT, WorkClock, get_logger, prepare_run_dir, removed_if_refused, run_dir_lock
from udacisense.stages import STAGES, StageContext
from udacisense.train import resolve_device

CACHE = ".cache"
JOURNAL = "stages.jsonl"


# --- the run folder's layout: only this module knows it; the search and the commands ask these functions ----------


def stage_folder(run_dir: Path, index: int, stage_id: str) -> Path:
    """Where stage ``index`` (0: the baseline) keeps its checkpoint and working files."""
    return run_dir / "stages" / f"{index:02d}_{stage_id}"


def deploy_folder(run_dir: Path) -> Path:
    """The run's deploy bundle."""
    return run_dir / "deploy"


def finished_result(run_dir: Path) -> dict[str, Any] | None:
    """What a finished run measured (its ``result.json``), or None when the run has not finished."""
    path = run_dir / RESULT
    return json.loads(path.read_text()) if path.is_file() else None


def artifact_file(run_dir: Path, result: dict[str, Any], kind: str) -> Path:
    """The file of the run's ``kind`` artifact in its deploy bundle."""
    return deploy_folder(run_dir) / result["deploy"]["artifacts"][kind]["file"]


def share_baseline(finished: Path, run_dir: Path) -> None:
    """Start ``run_dir`` with the baseline stage (folder and journal record) of the finished run ``finished``, which had
    the same data, baseline and reference formats: the run then reuses those measurements instead of repeating them.
    Files are hard links: nothing is copied."""
    run_dir.mkdir(parents=True)
    shutil.copytree(stage_folder(finished, 0, "baseline"), stage_folder(run_dir, 0, "baseline"), copy_function=os.link)
    first = (finished / JOURNAL).read_text().splitlines()[0]
    atomic_write(run_dir / JOURNAL, lambda handle: handle.write((first + "\n").encode()))


class Journal:
    """``stages.jsonl``: one record per finished stage, rewritten atomically when later records go stale."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        if resume and path.is_file():
            self.records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def reuse(self, index: int, stage_hash: str) -> dict[str, Any] | None:
        """The finished record for stage ``index`` if its config hash matches; otherwise forget it and all later ones."""
        if index < len(self.records) and self.records[index]["hash"] == stage_hash:
            return self.records[index]
        if len(self.records) > index:
            self.records = self.records[:index]
            self.save()
        return None

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        self.records.append(record)
        self.save()
        return record

    def save(self) -> None:
        text = "".join(json.dumps(record) + "\n" for record in self.records)
        atomic_write(self.path, lambda handle: handle.write(text.encode()))


def run_pipeline(pipeline: Pipeline, runs_dir: Path = Path("runs"), *, resume: bool = False, overwrite: bool = False,
                 name: str | None = None, retime: bool = False, report: bool = True) -> dict[str, Any]:
    """Run (or resume) ``pipeline`` in ``runs_dir/<name>/``; returns what ``result.json`` holds.

    ``retime`` (with ``resume``) measures every latency again (baseline, stages, artifacts) and keeps
    everything else: for runs whose timings were taken while the machine was busy. ``report=False`` skips
    ``report.md``/``report.html`` (a search trial: its search writes one report for all trials).
    """
    tracking.require_backend(pipeline.recipe.tracking)
    if not distributed.init(resolve_device(pipeline.recipe.baseline.train.device)).main:  # under torchrun: see udacisense.distributed
        runs_dir = distributed.private_runs_dir(runs_dir, name or pipeline.recipe.name, resume)
        pipeline = replace(pipeline, recipe=pipeline.recipe.model_copy(update={"tracking": TrackingConfig()}))
    distributed.barrier()
    recipe = pipeline.recipe
    with run_dir_lock(Path(runs_dir) / (name or recipe.name)), ExitStack() as tracked_run:
        tracked_run.enter_context(removed_if_refused(Path(runs_dir) / (name or recipe.name), JOURNAL))
        run_dir = prepare_run_dir(runs_dir, name or recipe.name, resume=resume, overwrite=overwrite)
        logger = get_logger(run_dir, "pipeline")
        if recipe.threads:
            torch.set_num_threads(recipe.threads)
        resolved = recipe.model_dump(mode="json") | {"stages": [stage.config() | {"id": stage.id} for stage in pipeline.stages]}
        atomic_write(run_dir / "recipe.yaml", lambda handle: handle.write(yaml.safe_dump(resolved, sort_keys=False).encode()))
        journal = Journal(run_dir / JOURNAL, resume)
        tracked_run.enter_context(tracking.tracked(recipe.tracking, run_dir, resolved))
        started = time.perf_counter()

        # 0: the baseline every number is compared with
        baseline_spec = recipe.baseline.model_dump(mode="json")
        if recipe.baseline.checkpoint is not None:
            baseline_spec["checkpoint_sha256"] = sha256_of(recipe.baseline.checkpoint)  # checked to exist by validate_recipe
        stage_hash = config_hash("baseline", recipe.data.model_dump(mode="json"), baseline_spec)
        baseline = journal.reuse(0, stage_hash)
        if baseline is None:
            logger.info(f"[0/{len(pipeline.stages)}] baseline")
            with _failure_reported(run_dir, journal, "the baseline", logger):
                with tracking.metric_prefix("baseline"):
                    baseline = journal.append(_run_baseline(pipeline, run_dir, stage_hash, resume, logger))
                _track_record(baseline)
        checkpoint = Path(baseline["checkpoint"])
        model, payload = load_model(checkpoint)
        contract, model_spec = payload["input"], payload["model"]
        dataset = dataset_for_recipe(recipe.data, contract)
        artifacts: dict[str, tuple[Path, dict[str, Any]]] = {}  # the last stage's artifacts and their export details

        for planned in pipeline.stages:
            stage_hash = config_hash(stage_hash, planned.config())
            folder = stage_folder(run_dir, planned.index, planned.id)
            record = journal.reuse(planned.index, stage_hash)
            if record is None:
                logger.info(f"[{planned.index}/{len(pipeline.stages)}] {planned.kind} ({planned.id})")
                with _failure_reported(run_dir, journal, f"stage {planned.index} ({planned.id})", logger):
                    with tracking.metric_prefix(planned.id):
                        record = journal.append(_run_stage(planned, model, model_spec, contract, dataset, recipe, folder, stage_hash,
                                                           Path(baseline["checkpoint"]), resume, logger))
                _track_record(record)
                logger.info(f"  -> {_describe_metrics(record['metrics'])}")
            else:
                logger.info(f"[{planned.index}/{len(pipeline.stages)}] {planned.kind} ({planned.id}): finished earlier, reused")
            model, payload = load_model(record["checkpoint"])
            model_spec = payload["model"]
            artifacts = {kind: (Path(path), record["info"].get("export", {})) for kind, path in record["artifacts"].items()}
            checkpoint = Path(record["checkpoint"])

        if not distributed.world().main:  # every fine-tune is done; exports, measurements and reports are rank 0's
            return {"name": run_dir.name, "run": str(run_dir), "rank": distributed.world().rank}
        manifest = None
        if recipe.export.formats:
            # the key is not part of the export's identity: signing with another key re-signs, it does not re-export
            export_hash = config_hash(stage_hash, recipe.export.model_dump(mode="json", exclude={"sign"}))
            manifest = _export(recipe, checkpoint, artifacts, run_dir, export_hash, logger)
        if retime:
            logger.info("re-timing the baseline, every stage and every artifact")
            baseline, manifest = _retime(journal, manifest, run_dir, recipe.export.latency_runs)
        if manifest is not None:
            _sign_or_unsign(deploy_folder(run_dir), recipe.export.sign, logger)
        variants = None
        if recipe.export.variants:
            variants = _export_variants(recipe, journal, config_hash(export_hash, "variants"), run_dir, retime, logger)
        primary = recipe.export.formats[0] if manifest else None
        failures = _validation_failures(manifest, variants)
        result = {
            "name": run_dir.name,
            "run": str(run_dir),
            "recipe": resolved,
            "source": str(pipeline.source) if pipeline.source else None,
            "baseline": baseline,
            "stages": journal.records[1:],
            "deploy": manifest,
            "variants": variants,
            "primary": primary,
            "targets": check_targets(recipe.targets, baseline, primary, manifest["artifacts"][primary]) if manifest else [],
            "validation": {"passed": not failures, "failures": failures},
            "machine": machine_info(),
            "seconds_this_invocation": time.perf_counter() - started,
        }
        write_json(run_dir / RESULT, result)
        if report:
            result["report"] = {kind: str(path) for kind, path in write_report(result, run_dir).items()}
        tracking.log_metrics({f"target/{row['target']}": row["measured"] for row in result["targets"]})
        tracking.log_artifacts(*(run_dir / name for name in ("report.md", "report.html", RESULT, "recipe.yaml", "pipeline.log", "deploy", "variants")))
        return result


def _validation_failures(manifest: dict[str, Any] | None, variants: dict[str, Any] | None) -> list[str]:
    """Every shipped artifact (deploy bundle and variants) that failed its check in its runtime, one line each."""
    failures = validation_failures(manifest) if manifest else []
    if variants:
        failures += validation_failures(json.loads((Path(variants["folder"]) / "manifest.json").read_text()))
    return failures


def require_validated_run(result: dict[str, Any]) -> None:
    """Raise :class:`ValidationFailed` when a shipped artifact of a finished run failed validation (after its report)."""
    report = result.get("report", {}).get("html", result["run"])
    require_validated(result.get("validation", {}).get("failures", []), f"everything is written: {report}")


def _track_record(record: dict[str, Any]) -> None:
    """A finished step's measured numbers to the tracked run, as ``<stage id>/<metric>``."""
    metrics = record["metrics"]
    numbers = {key: metrics[key] for key in ("test_top1", "agreement", "parameters", "bytes", "macs") if key in metrics}
    latency = metrics.get("latency_ms") or {label: row["p50_ms"] for label, row in metrics.get("eager_latency", {}).items()}
    numbers |= {f"latency_ms_{label}": value for label, value in latency.items()}
    tracking.log_metrics({f"{record['id']}/{key}": value for key, value in numbers.items()}, step=record["index"])


@contextmanager
def _failure_reported(run_dir: Path, journal: Journal, step: str, logger) -> Iterator[None]:
    """A failed step (training diverged or ended at chance, a stage's model at chance, an artifact that disagrees with
    its source) stops the run with a report that says so."""
    try:
        yield
    except TrainingFailed as failure:
        logger.error(f"{failure.label} in {step}: {failure}", extra=FILE_ONLY)
        write_failure_report(run_dir, run_dir.name, step, str(failure), [record["id"] for record in journal.records], label=failure.label)
        raise


def _run_stage(planned, model, model_spec: dict[str, Any], contract: dict[str, Any], dataset: ImageDataset, recipe: Recipe, folder: Path,
               stage_hash: str, baseline_checkpoint: Path, resume: bool, logger) -> dict[str, Any]:
    """Run one stage in ``folder``, save its checkpoint atomically, measure it; returns its journal record."""
    _prepare_stage_folder(folder, stage_hash, resume)
    stage = STAGES.get(planned.kind)
    # runs_dir/.cache: measurements that depend only on their inputs, shared by the runs (and a search's trials) there
    context = StageContext(dataset, recipe.data, model_spec, contract, folder, baseline_checkpoint, logger, resume, cache_dir=folder.parents[2] / CACHE)
    with WorkClock(folder) as seconds:
        output = stage.run(model, planned.params, context)
        save_checkpoint(folder / "model.pt", output.model, output.model_spec or model_spec, contract, compression=planned.config())
        metrics = distributed.main_only(lambda: stage_metrics(output.model, folder / "model.pt", output.artifacts, dataset, tuple(contract["shape"]),
                                                              recipe.export.latency_runs, source=output.source))
        write_json(folder / "metrics.json", metrics)
    judge_stage(f"stage {planned.index} ({planned.id})", metrics, dataset, recipe.export.min_agreement)
    info = _jsonable(output.info)
    return {
        "index": planned.index, "id": planned.id, "stage": planned.kind, "hash": stage_hash,
        "config": planned.config(), "seconds": seconds(),
        "checkpoint": str(folder / "model.pt"), "artifacts": {kind: str(path) for kind, path in output.artifacts.items()},
        "summary": stage.describe(planned.params, info), "info": info,
        "metrics": {key: value for key, value in metrics.items() if key != "layers"},
    }


def judge_stage(step: str, metrics: dict[str, Any], dataset: ImageDataset, min_agreement: float) -> None:
    """Fail a stage whose model, as measured, is at chance (one-shot stages have no training check of their own), or
    whose artifact disagrees with the model it was converted from by more than the recipe's ``export.min_agreement``."""
    verdict = judge_training(metrics["test_top1"], dataset.test.labels, dataset.num_classes, "test")
    if verdict.failed:
        what = f"{metrics['runtime']} artifact {metrics['file']}" if metrics.get("file") else "model"
        raise CompressionFailed(f"{step} left no usable {what}: {verdict.reason}")
    if "conversion_agreement" in metrics:
        agreement, source, source_top1 = metrics["conversion_agreement"], "the fake-quantized model it was converted from", metrics["source_top1"]
    elif "agreement" in metrics:
        agreement, source, source_top1 = metrics["agreement"], "the model it was converted from", None
    else:
        return
    if agreement < min_agreement:
        compared = f" (top-1 {metrics['test_top1']:.2f}% against {source_top1:.2f}%)" if source_top1 is not None else ""
        raise CompressionFailed(f"{step}: {metrics['file']} agrees with {source} on {agreement:.2f}% of the test images{compared}, "
                                f"below the recipe's tolerance export.min_agreement = {min_agreement:g}%")


def _retime(journal: Journal, manifest: dict[str, Any] | None, run_dir: Path, runs: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """New latency (and memory) measurements for every record and artifact, written back in place; returns the
    baseline's record and the deploy bundle's manifest."""
    baseline, *stages = journal.records
    shape = tuple(baseline["input"]["shape"])
    eager = bench_artifact("checkpoint", Path(baseline["checkpoint"]), shape, runs=runs)
    baseline["metrics"] |= {"eager_latency": eager["latency"], "latency_ms": p50(eager), "memory": eager["memory"]}
    for kind, reference in baseline["references"].items():
        timing = bench_artifact(kind, stage_folder(run_dir, 0, "baseline") / "reference" / reference["file"], shape, runs=runs)
        reference |= {"latency_ms": p50(timing), "memory": timing["memory"]}
    for record in stages:
        kind, path = next(iter(record["artifacts"].items()), ("checkpoint", record["checkpoint"]))
        timing = bench_artifact(kind, Path(path), shape, runs=runs)
        record["metrics"]["latency_ms"] = p50(timing)
        if record["artifacts"]:  # fp32 stages record no memory when first measured either
            record["metrics"]["memory"] = timing["memory"]
    journal.save()
    return baseline, retime_bundle(deploy_folder(run_dir), runs) if manifest is not None else None


def dataset_for_recipe(data: DataConfig, contract: dict[str, Any]) -> ImageDataset:
    """The recipe's data (its splits and subsets) presented as the baseline expects: its shape and normalization."""
    _, channels, height, _ = contract["shape"]
    dataset = get_dataset(data.model_copy(update={"channels": channels, "image_size": height}))
    return replace(dataset, normalization=Normalization(tuple(contract["mean"]), tuple(contract["std"])))


def _run_baseline(pipeline: Pipeline, run_dir: Path, stage_hash: str, resume: bool, logger) -> dict[str, Any]:
    """Train (or take) the baseline, then measure it: eager profile, fresh-process latency, fp32 exports."""
    from udacisense.config import ModelConfig, RunConfig
    from udacisense.train import train_run

    recipe = pipeline.recipe
    folder = stage_folder(run_dir, 0, "baseline")
    if recipe.baseline.checkpoint is not None:
        checkpoint = recipe.baseline.checkpoint
        folder.mkdir(parents=True, exist_ok=True)
    else:
        _prepare_stage_folder(folder, stage_hash, resume)
    with WorkClock(folder) as seconds:
        if recipe.baseline.checkpoint is None:
            config = RunConfig(name=folder.name, runs_dir=folder.parent, data=recipe.data,
                               model=ModelConfig(name=recipe.baseline.model, kwargs=recipe.baseline.model_kwargs), train=recipe.baseline.train)
            train_run(config, resume=True)  # the folder was just emptied unless this is a resume of the same baseline
            checkpoint = folder / "best.pt"
        return distributed.main_only(lambda: _measure_baseline(pipeline, Path(checkpoint), folder, stage_hash, seconds, logger))


def _measure_baseline(pipeline: Pipeline, checkpoint: Path, folder: Path, stage_hash: str, seconds: Callable[[], float], logger) -> dict[str, Any]:
    """The baseline's journal record: eager profile, fresh-process latency, fp32 exports, each measured in its runtime."""
    recipe = pipeline.recipe
    model, payload = load_model(checkpoint)
    contract = payload["input"]
    dataset = dataset_for_recipe(recipe.data, contract)
    input_shape = tuple(contract["shape"])
    metrics = model_metrics(model, dataset, input_shape)
    if "training" not in payload:  # a checkpoint from elsewhere: judge it before anything is built on it
        verdict = judge_training(metrics["test_top1"], dataset.test.labels, dataset.num_classes, "test")
        if verdict.failed:
            raise TrainingFailed(f"baseline {checkpoint} is no usable model: {verdict.reason}; retrain it before compressing it")
    eager = bench_artifact("checkpoint", Path(checkpoint), input_shape, runs=recipe.export.latency_runs)
    metrics |= {"latency_ms": p50(eager)}
    write_json(folder / "metrics.json", metrics)
    images, labels = dataset.whole("test")
    logits = source_logits(model, images)
    references = {}
    for kind in reference_formats(pipeline):
        logger.info(f"  exporting the baseline as fp32 {kind} for a same-runtime comparison")
        path, _ = FORMATS.get(kind).export(model, torch.zeros(input_shape), folder / "reference", lambda: [])
        references[kind] = measure_artifact(kind, path, input_shape, images, labels, logits, latency_runs=recipe.export.latency_runs)
    metrics = {key: value for key, value in metrics.items() if key != "layers"} | {"eager_latency": eager["latency"], "memory": eager["memory"]}
    return {
        "index": 0, "id": "baseline", "stage": "baseline", "hash": stage_hash, "seconds": seconds(),
        "checkpoint": str(checkpoint), "model": payload["model"], "input": contract, "metrics": metrics, "references": references,
        "layers_file": str(folder / "metrics.json"), "test_images": int(labels.numel()),
    }


def reference_formats(pipeline: Pipeline) -> list[str]:
    """The fp32 formats the baseline is exported to, so that every shipped or stage-built artifact is compared with
    the baseline in its own runtime (an int8 ``.pte`` with the fp32 ``.pte``)."""
    if not pipeline.recipe.export.references:
        return []
    built = [stage.params.builds_artifact() for stage in pipeline.stages]
    kinds = [*pipeline.recipe.export.formats, *(kind for kind in built if kind)]
    return sorted({FORMATS.get(kind).reference for kind in kinds if FORMATS.get(kind).reference})


def _prepare_stage_folder(folder: Path, stage_hash: str, resume: bool) -> None:
    """Keep a stage's partial work only when resuming the very same configuration; otherwise start clean."""
    marker = folder / ".config_hash"
    if not (resume and marker.is_file() and marker.read_text() == stage_hash):
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(stage_hash)


def _export(recipe, checkpoint: Path, artifacts: dict[str, tuple[Path, dict[str, Any]]], run_dir: Path, export_hash: str, logger) -> dict[str, Any]:
    """The deploy bundle for the final model (reused when nothing before it changed)."""
    from udacisense.deploy.validate import Tolerances

    output = deploy_folder(run_dir)
    marker = run_dir / "deploy.hash"
    if marker.is_file() and marker.read_text() == export_hash and (output / "manifest.json").is_file():
        logger.info("export: finished earlier, reused")
        return json.loads((output / "manifest.json").read_text())
    marker.unlink(missing_ok=True)
    remove_bundle(output)
    shutil.rmtree(output, ignore_errors=True)
    split = "validation" if recipe.data.evaluate_on == "val" else "test"
    logger.info(f"export: {', '.join(recipe.export.formats)} -> {output}/ (validated on the whole {split} split)")
    spec = recipe.export
    manifest = build_bundle(
        checkpoint, output, list(spec.formats), calibration_images=spec.calibration_images, data_root=recipe.data.root,
        test_subset=recipe.data.test_subset, data_options=recipe.data.model_dump(include={"val_fraction", "split_seed", "evaluate_on"}),
        tolerances=Tolerances(spec.min_agreement, spec.max_abs_diff), latency_runs=spec.latency_runs,
        prebuilt={kind: built for kind, built in artifacts.items() if kind in spec.formats}, log=logger.info,
    )
    marker.write_text(export_hash)
    return manifest


def _export_variants(recipe: Recipe, journal: Journal, variants_hash: str, run_dir: Path, retime: bool, logger) -> dict[str, Any]:
    """``variants/``: the models of ``export.variants`` and the final model in every export format, one bundle (reused
    when nothing before it changed, and then timed again with ``retime``); the final model's int8 artifacts are taken
    as its stage built them."""
    from udacisense.deploy.validate import Tolerances

    output, marker = run_dir / "variants", run_dir / "variants.hash"
    if marker.is_file() and marker.read_text() == variants_hash and (output / "manifest.json").is_file():
        logger.info("variants: finished earlier, reused" + ("; re-timing every variant" if retime else ""))
        if retime:
            retime_variant_bundle(output, recipe.export.latency_runs, log=logger.info)
    else:
        marker.unlink(missing_ok=True)
        records = {record["id"]: record for record in journal.records}
        names = [*dict.fromkeys([*recipe.export.variants, journal.records[-1]["id"]])]
        logger.info(f"variants: {', '.join(names)} as {', '.join(recipe.export.formats)} -> {output}/")
        sources = [VariantSource(name, Path(records[name]["checkpoint"]), {kind: (Path(path), records[name]["info"].get("export", {}))
                                                                           for kind, path in records[name].get("artifacts", {}).items()})
                   for name in names]
        spec = recipe.export
        build_variant_bundle(sources, output, list(spec.formats), latency_runs=spec.latency_runs, log=logger.info,
                             calibration_images=spec.calibration_images, data_root=recipe.data.root, test_subset=recipe.data.test_subset,
                             data_options=recipe.data.model_dump(include={"val_fraction", "split_seed", "evaluate_on"}),
                             tolerances=Tolerances(spec.min_agreement, spec.max_abs_diff))
        marker.write_text(variants_hash)
    _sign_or_unsign(output, recipe.export.sign, logger)
    return {"folder": str(output), "report": str(output / "report.md")}


def _sign_or_unsign(folder: Path, key: Path | None, logger) -> None:
    """Sign the bundle's manifest with ``key``; without one, drop a signature a re-export or re-timing made stale."""
    if key is not None:
        record = sign_bundle(folder, key)
        logger.info(f"signed {folder / SIGNATURE_FILE} ({record['algorithm']}, public key sha256 {record['public_key_sha256'][:16]}…)")
    elif (folder / SIGNATURE_FILE).is_file():
        (folder / SIGNATURE_FILE).unlink()
        logger.info("removed the bundle's old signature (no export.sign key this time): the bundle is unsigned")


def check_targets(targets: Targets, baseline: dict[str, Any], kind: str, artifact: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target against the shipped artifact measured in its runtime: what was asked, what was measured, pass/fail."""
    metrics = baseline["metrics"]
    latency = artifact["latency"]["1_thread"]["p50_ms"]
    eager = metrics["eager_latency"]["1_thread"]["p50_ms"]
    rows = [
        _target("size reduction", f"1 - {kind} file / fp32 baseline state dict", 1 - artifact["bytes"] / metrics["bytes"],
                targets.size_reduction, at_least=True),
        _target("latency reduction", f"1 - {kind} p50 / eager fp32 baseline p50 (batch 1, 1 thread)", 1 - latency / eager,
                targets.latency_reduction, at_least=True),
        _target("accuracy drop (pt)", f"baseline top-1 - {kind} top-1, whole test split",
                metrics["test_top1"] - artifact["validation"]["top1"], targets.max_accuracy_drop, at_least=False),
    ]
    reference_kind = FORMATS.get(kind).reference
    reference = baseline["references"].get(reference_kind or "")
    if targets.runtime_latency_reduction is not None and reference:
        rows.append(_target("runtime latency reduction", f"1 - {kind} p50 / fp32 baseline {FORMATS.get(reference_kind).file_name} p50",
                            1 - latency / reference["latency_ms"]["1_thread"], targets.runtime_latency_reduction, at_least=True))
    if not artifact["validation"]["passed"]:  # its numbers describe a file that does not compute what its model does
        rows = [row | {"passed": False, "validation_failed": True} for row in rows]
    return rows


def _target(name: str, definition: str, measured: float, goal: float, *, at_least: bool) -> dict[str, Any]:
    return {"target": name, "definition": definition, "goal": goal, "measured": measured, "at_least": at_least,
            "passed": measured >= goal if at_least else measured <= goal}


def _describe_metrics(metrics: dict[str, Any]) -> str:
    latency = metrics["latency_ms"]
    one = latency.get("1_thread") if isinstance(latency.get("1_thread"), (int, float)) else None
    return (f"top-1 {metrics['test_top1']:.2f}%, {metrics['bytes'] / 1e6:.2f} MB, {metrics['macs'] / 1e6:.2f} MMACs"
            + (f", {one:.3f} ms ({metrics['runtime']}, 1 thread)" if one is not None else ""))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda item: item.tolist() if hasattr(item, "tolist") else str(item)))
