"""``udacisense search``: a constrained, multi-objective, multi-fidelity search over compression recipes.

Every trial is a recipe drawn from the registered stages' own search spaces (a stage declares its space once, in its
parameter model; see :class:`TrialDraw`), run by the same runner as ``udacisense run`` in ``search/trials/<config
hash>/``: a trial is reproducible from its recipe, and a trial whose recipe was run before (by this worker, another
worker, or before a crash) reuses its folder. The search names no stage: the first trials are an explicit design
that spreads over the whole space (the hand recipe's own point, when the search starts from a recipe with stages,
then scrambled Halton points), after which optuna's TPE sampler learns; a configuration is never drawn twice.

Objectives, all measured: validation top-1 of the artifact in its runtime (the test split is read only for the
final report of the front), its latency (batch 1, 1 thread, fresh process) and its file size. The accuracy drop,
latency and size limits are constraints, not weights: each trial stores by how much it misses each limit, as a share
of the limit, with ``trial.set_constraint``, and optuna's TPE sampler reads those values from every finished trial
(a trial that misses one ranks below every feasible trial, so the sampler's model of "good" is the feasible region).
Optuna's pruners do not support multi-objective studies, so fidelity is handled here: trials first fine-tune for
``proxy_epochs``; once another ``promote_every`` proxy trials have finished, the best proxy candidates not yet
promoted are queued in a second study at ``full_epochs`` (successive halving in two rungs). Either study is on SQLite
in the run folder (which one process at a time may write) or on a shared ``storage`` URL, where optuna's heartbeat
fails the trials of a killed worker and a retry callback queues them again; a single worker's ``--resume`` retries its
own unfinished trials at once.

A trial fails alone: whatever it raises (a user error, a bug, an artifact that failed validation) marks that trial
failed, with the reason in its ``error`` attribute and the log, and the search goes on. After every trial,
``pareto.json``, ``pareto.png``, ``report.md``, one recipe per front point (``points/``) and the best-so-far recipe
per objective (``best_*.yaml``) are rewritten, and when the search ends (budget, trial count, Ctrl-C or an error
outside a trial) the front is measured on the test split first, so a search that is stopped, runs out of budget or
never meets its constraints still hands over the best points found.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import math
import os
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from udacisense.deploy.bench import latency_threads
from udacisense.errors import UdaciSenseError
from udacisense.formats import FORMATS
from udacisense.io import atomic_write, config_hash, write_json
from udacisense.pipeline.recipe import Pipeline, apply_override, validate_recipe
from udacisense.pipeline.runner import artifact_file, finished_result, run_pipeline, share_baseline
from udacisense.pipeline.search_spec import SearchSpec
from udacisense.registry import did_you_mean
from udacisense.runs import FILE_ONLY, WorkClock, get_logger, prepare_run_dir, run_dir_lock

SEARCH_FOLDER = "search"  # a search's own folder in its run folder: the study, trials/<hash>/ (each a run), the front
DEFAULT_ARTIFACT = "pte"  # what a trial whose last stage builds no artifact of its own ships
HALTON_DIMENSIONS = 32  # more than any trial draws: a name past them reuses a coordinate
EXPLORE_ATTEMPTS = 200  # design points tried for one configuration never drawn before
HEARTBEAT_SECONDS = 30
STORAGE_ATTEMPTS = 5
STUDY_NAMES = {"proxy": "proxy", "full": "full"}
SUFFIX = {"accuracy": "most accurate", "latency": "fastest", "size": "smallest"}
FIXED_BY_ARCHITECTURE = ("size", "latency")  # constraints a longer fine-tune cannot change
# A limit of 0 points of accuracy drop has no scale to measure a miss against: a tenth of a point (about one image in a
# thousand validation images) stands in for it, so a 0.1 pt drop then misses by as much as a 2 ms latency misses 1 ms.
DROP_FLOOR = 0.1
PROMOTION = "promotion_"  # the proxy study's user attrs promotion_1, promotion_2, ...: the promotions done so far


def search_base(recipe: str | Path | None, checkpoint: Path | None, overrides: list[str] = ()) -> Pipeline:
    """The recipe whose data and baseline a search uses: a recipe file or name, a checkpoint alone, or both
    (the checkpoint replaces the recipe's baseline)."""
    from udacisense.checkpoint import training_data
    from udacisense.pipeline.recipe import load_recipe

    if recipe is None and checkpoint is None:
        raise UdaciSenseError("give a recipe or --checkpoint BASELINE.pt (the fp32 model to compress)")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise UdaciSenseError(f"--checkpoint {checkpoint} does not exist; train one with 'udacisense train'")
    overrides = list(overrides) + ([f"baseline={json.dumps({'checkpoint': str(checkpoint)})}"] if checkpoint is not None else [])
    if recipe is not None:
        return load_recipe(recipe, overrides)
    data = training_data(checkpoint)  # its root and validation split
    raw = {"name": "search", "data": data, "stages": []}
    for item in overrides:
        apply_override(raw, item)
    return validate_recipe(raw)


class RepeatedConfiguration(Exception):
    """A draw that repeats an earlier trial's configuration: dropped, never run (see ``Search._never_twice``)."""


class SpaceExhausted(Exception):
    """Every configuration the space allows has been drawn."""


Pick = Callable[[str, str, Sequence[Any]], Any]  # (name, kind: float/choice/present, [low, high] or the choices) -> value


class TrialDraw:
    """One trial's draw through the stages' own search spaces (the :class:`~udacisense.stages.registry.SearchDraw` a
    stage sees): every value the space asks for comes from ``pick`` (optuna's trial, a point of the initial design, or
    the hand recipe) unless the search's ``space:`` fixes it; what is drawn or set becomes the stage's parameters."""

    def __init__(self, spec: SearchSpec, fidelity: str, pick: Pick) -> None:
        self.fine_tune_epochs = spec.proxy_epochs if fidelity == "proxy" else spec.full_epochs
        self.lr = spec.lr
        self._overrides = spec.space
        self._pick = pick
        self._prefix = ""
        self.params: dict[str, Any] = {}
        self.asked: set[str] = set()  # every dimension name this draw met (drawn, fixed by the search options or not)
        self.set_names: set[str] = set()  # the names the stages set themselves: not dimensions

    def stage(self, name: str, draw_space: Callable[["TrialDraw"], None]) -> dict[str, Any]:
        """The parameters ``draw_space`` draws for stage ``name``."""
        self._prefix, self.params = f"{name}.", {}
        draw_space(self)
        self._prefix = ""
        return self.params

    def float(self, name: str, low: float, high: float) -> float:
        full, override = self._override(name)
        if override is not None and not isinstance(override, list):
            value = float(override)
        else:
            if override is not None:
                if len(override) != 2 or not all(isinstance(bound, (int, float)) for bound in override) or override[0] > override[1]:
                    raise UdaciSenseError(f"search.space.{full} is a range: give [low, high], e.g. [{low}, {high}] (got {override})")
                low, high = override
            value = float(self._pick(full, "float", (low, high)))
        self.set(name, value)
        return value

    def choice(self, name: str, options: Sequence[Any]) -> Any:
        value = self._choose(name, "choice", options)
        self.set(name, value)
        return value

    def present(self, name: str) -> bool:
        return bool(self._choose(name, "present", (True, False)))

    def set(self, name: str, value: Any) -> None:
        self.set_names.add(self._prefix + name)
        *parents, leaf = name.split(".")
        target = self.params
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value

    def _override(self, name: str) -> tuple[str, Any]:
        full = self._prefix + name
        self.asked.add(full)
        return full, self._overrides.get(full)

    def _choose(self, name: str, kind: str, options: Sequence[Any]) -> Any:
        full, override = self._override(name)
        if override is None:
            return self._pick(full, kind, tuple(options))
        values = override if isinstance(override, list) else [override]
        unknown = [value for value in values if value not in options]
        if unknown or not values:
            raise UdaciSenseError(f"search.space.{full} takes some of {list(options)} (got {override})")
        return values[0] if len(values) == 1 else self._pick(full, kind, tuple(values))


def searched_stages(spec: SearchSpec) -> list[Any]:
    """The registered stages a trial may use, in the order a pipeline runs them (their ``search_order``)."""
    from udacisense.stages import STAGES

    names = spec.stages if spec.stages is not None else [name for name, stage in STAGES.items() if stage.params.search_order is not None]
    stages = [STAGES.get(name, where="search.stages") for name in names]
    for stage in stages:
        if stage.params.search_order is None:
            raise UdaciSenseError(f"search.stages names '{stage.name}', which declares no search space")
    return sorted(stages, key=lambda stage: stage.params.search_order)


def draw_pipeline(draw: TrialDraw, spec: SearchSpec) -> list[dict[str, Any]]:
    """The stages of one trial: for every searched stage, whether it is used, then its parameters, with the search's
    fixed settings (``fine_tune`` in every fine-tune, ``stage_options``, the calibration size where the stage takes one)."""
    stages = []
    for stage in searched_stages(spec):
        if not draw.present(stage.name):
            continue
        params = draw.stage(stage.name, stage.params.search_space)
        if section := training_section(params):
            params[section] = spec.fine_tune | params[section]  # the drawn epochs and rate win
        params = merged(params, spec.stage_options.get(stage.name, {}))
        if "calibration_images" in stage.params.model_fields:
            params.setdefault("calibration_images", spec.calibration_images)
        stages.append({"stage": stage.name, "id": stage.name, **params})
    return stages


def training_section(stage: dict[str, Any]) -> str | None:
    """The section of a drawn stage's parameters that trains for the trial's fidelity: a fine-tune after a cut
    (``fine_tune``), a new student's training (``train``), or None."""
    return next((section for section in ("fine_tune", "train") if section in stage), None)


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied section by section (a nested dict changes only the keys it names)."""
    result = dict(base)
    for key, value in changes.items():
        result[key] = merged(result[key], value) if isinstance(value, dict) and isinstance(result.get(key), dict) else value
    return result


def trial_recipe(base: dict[str, Any], stages: list[dict[str, Any]], spec: SearchSpec, summary: str, fidelity: str) -> dict[str, Any]:
    """The recipe a trial runs: the base recipe's data and baseline, measured on the validation split. Its artifact is
    the one the last stage builds (an int8 ``.pte`` after quantize), else the fp32 ``.pte``."""
    from udacisense.stages import STAGES

    built = STAGES[stages[-1]["stage"]].params.model_validate(_without_ids(stages[-1])).builds_artifact() if stages else None
    return {
        "name": base["name"],
        "description": f"{fidelity} trial of search '{base['name']}': {summary}",
        "threads": base.get("threads"),
        "data": {**base.get("data", {}), "evaluate_on": "val"},
        "baseline": base["baseline"],
        "stages": stages,
        "export": {**base.get("export", {}), "formats": [built or DEFAULT_ARTIFACT], "latency_runs": spec.latency_runs,
                   "calibration_images": spec.calibration_images, "references": False},
        "targets": {"max_accuracy_drop": spec.max_drop},
    }


def _without_ids(stage: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in stage.items() if key not in ("stage", "id")}


def describe_params(stages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """One short line: the trial's stages with the values drawn for them, e.g.
    'prune_channels (budget.macs 0.31, budget.params 0.24, importance taylor) + quantize (method qat)'."""
    parts = []
    for stage in (stage["stage"] for stage in stages):
        values = [f"{name[len(stage) + 1:]} {_short(value)}" for name, value in params.items() if name.startswith(f"{stage}.") and value not in (False, None)]
        parts.append(f"{stage} ({', '.join(values)})" if values else stage)
    return " + ".join(parts) or "the baseline alone (fp32)"


def _short(value: Any) -> str:
    return "yes" if value is True else f"{value:.3g}" if isinstance(value, float) else str(value)


def configuration_key(params: dict[str, Any]) -> str:
    """What makes two draws the same configuration: their values, ranges read to three decimals."""
    return json.dumps({name: round(value, 3) if isinstance(value, float) else value for name, value in params.items()}, sort_keys=True)


def unit_pick(point: Sequence[float], dimensions: dict[str, int]) -> Pick:
    """Values from a point of the unit cube: a name in ``dimensions`` reads its coordinate, any other name takes the
    next free one the first time it is asked (the search gives the stage decisions the first coordinates, which a
    Halton sequence spreads the most evenly)."""
    def pick(name: str, kind: str, options: Sequence[Any]) -> Any:
        unit = point[dimensions.setdefault(name, len(dimensions)) % len(point)]
        if kind == "float":
            return options[0] + unit * (options[1] - options[0])
        return options[min(int(unit * len(options)), len(options) - 1)]

    return pick


def recipe_stages(pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    """A validated recipe's stages by kind, every parameter given (defaults included): the hand recipe's point."""
    return {planned.kind: planned.params.model_dump(mode="json") for planned in pipeline.stages}


def recipe_pick(by_kind: dict[str, dict[str, Any]]) -> Pick:
    """Values from a hand-written recipe's stages (:func:`recipe_stages`): its point in the space (a range's value
    clipped into the range; a choice it does not make, the first option)."""

    def value_at(name: str) -> Any:
        kind, *path = name.split(".")
        value: Any = by_kind.get(kind)
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        return value

    def pick(name: str, kind: str, options: Sequence[Any]) -> Any:
        value = value_at(name)
        if kind == "present":
            return value is not None
        if kind == "float":
            return min(max(float(value), options[0]), options[1]) if isinstance(value, (int, float)) else (options[0] + options[1]) / 2
        return next((option for option in options if option == value), options[0])

    return pick


def recorded(pick: Pick, into: dict[str, Any]) -> Pick:
    """``pick``, keeping every value it gives in ``into`` by name (a design point to queue in the study)."""
    def keep(name: str, kind: str, options: Sequence[Any]) -> Any:
        into[name] = pick(name, kind, options)
        return into[name]

    return keep


def optuna_pick(trial: optuna.Trial) -> Pick:
    """Values from optuna's sampler (or from the point queued for this trial)."""
    def pick(name: str, kind: str, options: Sequence[Any]) -> Any:
        return trial.suggest_float(name, *options) if kind == "float" else trial.suggest_categorical(name, list(options))

    return pick


def fixed_pick(params: dict[str, Any]) -> Pick:
    """Values a trial already drew (to read its configuration at another fidelity)."""
    return lambda name, kind, options: params[name]


class Search:
    """One worker of a search in ``runs_dir/<name>/search/`` (several workers may share a ``storage``). With its study in
    the folder's own SQLite file, it holds the run folder's lock from its creation until ``run`` ends (or ``close``)."""

    def __init__(self, base: Pipeline, spec: SearchSpec, runs_dir: Path, name: str, *, resume: bool = False, overwrite: bool = False,
                 log: Callable[[str], None] | None = None) -> None:
        self.spec = spec
        # One process writes a search in its own SQLite file (a second one would fail the first one's trials as
        # "interrupted"); workers sharing a storage share the folder on purpose (run_trial locks each trial's folder).
        self._lock = contextlib.ExitStack()
        if spec.storage is None:
            self._lock.enter_context(run_dir_lock(Path(runs_dir) / name))
        try:
            self._open(base, spec, runs_dir, name, resume, overwrite, log)
        except BaseException:
            self.close()
            raise

    def _open(self, base: Pipeline, spec: SearchSpec, runs_dir: Path, name: str, resume: bool, overwrite: bool,
              log: Callable[[str], None] | None) -> None:
        self.run_dir = prepare_run_dir(runs_dir, name, resume=resume or spec.storage is not None, overwrite=overwrite)
        self.folder = self.run_dir / SEARCH_FOLDER
        self.folder.mkdir(exist_ok=True)
        self.logger = get_logger(self.run_dir, "search")
        self.log = log or self.logger.info
        self.base = base.recipe.model_dump(mode="json", exclude={"stages", "export", "targets", "search"}, exclude_defaults=True) | {"name": name}
        self.hand_stages = recipe_stages(base)  # the hand recipe's own point opens the design
        self.exhausted = ""  # why no new configuration can be drawn, once that is so
        # the recipe's own agreement tolerance, if it sets one, judges each trial's int8 artifact as it would any run's
        if tolerance := base.recipe.export.model_dump(include={"min_agreement"}, exclude_defaults=True):
            self.base["export"] = tolerance
        if base.recipe.baseline.checkpoint is not None:  # the trials' and points' recipes work from any folder
            self.base["baseline"] = {"checkpoint": str(base.recipe.baseline.checkpoint.resolve())}
        storage = self.storage = self._storage(resume)
        sampler = proxy_sampler(spec)
        directions = ["maximize", "minimize", "minimize"]
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is ours, failures included
        self.studies = {
            fidelity: optuna.create_study(storage=storage, sampler=sampler if fidelity == "proxy" else optuna.samplers.RandomSampler(spec.seed),
                                          study_name=f"{name}-{study}", directions=directions, load_if_exists=True)
            for fidelity, study in STUDY_NAMES.items()
        }
        if resume and spec.storage is None:
            self._retry_unfinished()
        self.elapsed = WorkClock(self.folder)  # the budget's clock: it runs while run() does

    def close(self) -> None:
        """Release the run folder (``run`` does at its end) so that another process may resume the search."""
        self._lock.close()

    def _storage(self, resume: bool) -> optuna.storages.BaseStorage:
        url = self.spec.storage or f"sqlite:///{(self.folder / 'study.db').resolve()}"
        if not resume and self.spec.storage is None:
            (self.folder / "study.db").unlink(missing_ok=True)
        for attempt in range(STORAGE_ATTEMPTS):
            try:
                with warnings.catch_warnings():  # "experimental" notices about optuna's own retry callback: nothing for a user to do
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return optuna.storages.RDBStorage(
                        url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=4 * HEARTBEAT_SECONDS,
                        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
                    )
            except Exception as error:  # a wrong URL, an unreachable server, a missing driver: one line
                # Workers starting together on an empty database race to create optuna's tables and types (the loser
                # gets a unique violation, or PostgreSQL's DuplicateTable / DuplicateObject): wait and open it again.
                # Anything else is the user's to fix.
                raced = any(word in str(error).lower() for word in ("unique", "duplicate", "already exists"))
                if not raced or attempt == STORAGE_ATTEMPTS - 1:
                    raise UdaciSenseError(f"cannot open the search storage {url}: {str(error).splitlines()[0]}") from None
                time.sleep(1.0 + attempt)
        raise AssertionError("unreachable")

    def _retry_unfinished(self) -> None:
        """This worker alone used this study (SQLite in its folder): a trial still 'running' died with it; run it again."""
        for study in self.studies.values():
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                study.enqueue_trial(trial.params, user_attrs=trial.user_attrs)
                self.log(f"trial {trial.number} ({study.study_name}) was interrupted: queued again")

    # --- the loop ---------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Trials until the budget or the trial count is spent; returns what ``pareto.json`` holds. Ctrl-C or an error
        outside a trial ends the search too, with the final outputs written, and is then raised."""
        try:
            return self._run()
        finally:
            self.close()

    def _run(self) -> dict[str, Any]:
        if self.base["baseline"].get("checkpoint") is None:
            self.base["baseline"] = {"checkpoint": str(self._train_baseline())}
        self._queue_initial_design()
        # The budget counts this worker's time over every invocation (a resumed search goes on from the time spent,
        # including the trial a kill interrupted), so a search split across sessions costs what one run would.
        with self.elapsed:
            self.log(f"search {self.run_dir.name}: budget {self.spec.budget / 60:.0f} min ({self.elapsed() / 60:.1f} used), "
                     f"constraints: {self._constraints_text()}")
            try:
                while True:
                    while self._due_promotions():  # a loop: a resumed or shared study may be more than one promotion behind
                        self._promote()
                    fidelity, reason = self._next_trial()
                    if self.exhausted:
                        fidelity, reason = None, self.exhausted
                    if fidelity is None:
                        break
                    self._one_trial(fidelity)
            except BaseException as error:  # Ctrl-C or a bug outside a trial: hand over what was found, then stop as asked
                self._hand_over(error)
                raise
            front = self.write_outputs(final=True)
        self.log(f"search stopped: {reason}")
        if not front["trials"] and front["failed"]:
            self.log(f"EVERY TRIAL FAILED ({len(front['failed'])}); the reasons are in {self.folder / 'report.md'}")
        elif not front["feasible_found"]:
            self.log(f"NO TRIAL MET THE CONSTRAINTS ({self._constraints_text()}); the least-violating points are in {self.folder / 'pareto.json'}")
        return front

    def _hand_over(self, error: BaseException) -> None:
        """The final outputs of a search that ``error`` ends early (the error itself is the caller's to raise)."""
        cause = "interrupted" if isinstance(error, KeyboardInterrupt) else f"stopped by an error outside a trial ({failure_reason(error)})"
        try:
            self.write_outputs(final=True)
        except Exception as failed:  # the first error is the one to raise; this one is only said
            self.log(f"search {cause}; the final outputs could not be written ({failure_reason(failed)})")
            return
        self.log(f"search {cause}: the front so far is in {self.folder / 'report.md'} ({self.folder / 'pareto.json'}, "
                 f"{self.folder / 'points'}/); the same command with --resume goes on from here")

    def _finished(self) -> dict[str, list[FrozenTrial]]:
        """Per fidelity: measured trials and trials that failed on their own (not those of a killed worker, which run again)."""
        states = (TrialState.COMPLETE, TrialState.FAIL)
        return {fidelity: [t for t in study.get_trials(deepcopy=False, states=states) if t.state == TrialState.COMPLETE or "error" in t.user_attrs]
                for fidelity, study in self.studies.items()}

    def _next_trial(self) -> tuple[str | None, str]:
        """The fidelity of the next trial, or None and why the search stops (see :func:`next_trial`)."""
        waiting = self.studies["full"].get_trials(deepcopy=False, states=(TrialState.WAITING,))
        return next_trial(self.spec, self._finished(), min(waiting, key=lambda t: t.number, default=None), self.elapsed())

    def _due_promotions(self) -> bool:
        return promotion_due(self.studies["proxy"], self.spec)

    def _promote(self) -> None:
        """Queue the best proxy candidates (the feasible front first, then the least violating) at full fidelity."""
        chosen = promote(self.studies, self.spec)
        if chosen:
            self.log(f"promoting proxy trials {', '.join(str(t.number) for t in chosen)} to {self.spec.full_epochs} fine-tune epochs")

    def _one_trial(self, fidelity: str) -> None:
        """One trial through ``study.optimize``, whose heartbeat lets other workers retry it if this process dies."""
        self._last: dict[str, Any] | None = None
        if fidelity == "proxy":
            self._queue_design_point()
        # _objective has logged and recorded whatever failed; optuna marks the trial failed and the search goes on
        with budget_deadline(self.spec.budget - self.elapsed()), contextlib.suppress(BudgetSpent):  # suppressed: a deadline in
            # optuna's own bookkeeping rather than in the trial; the trial is left running there, as a killed worker's is
            self.studies[fidelity].optimize(lambda trial: self._objective(trial, fidelity), n_trials=1, catch=(Exception,))
        self.elapsed.save()
        front = self.write_outputs()
        if self._last is None or "top1" not in self._last:
            return
        last = self._last
        on_front = any(point["trial"] == last["trial"] for point in front["front"])
        self.log(
            f"trial {last['trial']} {last['summary']}: val top-1 {last['top1']:.2f}% ({-last['drop']:+.2f} pt), {last['latency_ms']:.3f} ms, "
            f"{last['megabytes']:.3f} MB{'' if feasible(last['constraints']) else ', violates constraints'}"
            f"{', ON THE FRONT' if on_front else ''} | {self.elapsed() / 60:.1f}/{self.spec.budget / 60:.0f} min"
        )

    def _objective(self, trial: optuna.Trial, fidelity: str) -> tuple[float, float, float]:
        if fidelity == "full" and "proxy_trial" not in trial.user_attrs:
            raise optuna.TrialPruned("another worker took the queued candidate first")
        label = f"{fidelity[0]}{trial.number}"
        self._last = {"trial": label, "summary": f"[{fidelity}]"}
        started = time.perf_counter()
        try:
            stages = draw_pipeline(TrialDraw(self.spec, fidelity, optuna_pick(trial)), self.spec)
            if fidelity == "proxy":
                self._never_twice(trial)
            summary = describe_params(stages, trial.params)
            trial.set_user_attr("summary", summary)
            self._last["summary"] = f"[{fidelity}] {summary}"
            recipe = trial_recipe(self.base, stages, self.spec, summary, fidelity)
            trial.set_user_attr("fine_tunes", any(training_section(stage) for stage in stages))
            if fidelity == "proxy":  # how much longer each stage trains at full fidelity (the budget rule's estimate)
                full = draw_pipeline(TrialDraw(self.spec, "full", fixed_pick(trial.params)), self.spec)
                trial.set_user_attr("epoch_scale", {stage["id"]: again[section]["epochs"] / stage[section]["epochs"]
                                                    for stage, again in zip(stages, full) if (section := training_section(stage))})
            trial.set_user_attr("recipe", recipe)  # in the study: a worker on another machine can write this point's recipe
            measured = self.run_trial(recipe)
            values = measured["top1"], measured["latency_ms"], measured["megabytes"]
            if not all(math.isfinite(value) for value in values):  # optuna would fail it without a reason
                raise UdaciSenseError(f"measured top-1 {values[0]}%, {values[1]} ms, {values[2]} MB: not finite numbers")
            measured["seconds"] = time.perf_counter() - started
            for key, value in measured.items():
                trial.set_user_attr(key, value)
            constraints = constraint_values(measured, self.spec)
            for key, value in constraints.items():  # the TPE sampler reads these (see proxy_sampler)
                trial.set_constraint(key, value)
        except RepeatedConfiguration:  # not a trial: dropped without a reason, replaced by a new point
            raise
        except KeyboardInterrupt:
            # optuna marks the trial failed; queued again, a --resume reruns it (its runner resumes from its last stage)
            self.studies[fidelity].enqueue_trial(trial.params, user_attrs=trial.user_attrs)
            raise
        except Exception as error:  # whatever goes wrong in one trial fails that trial alone (optuna catches it)
            reason = failure_reason(error)
            trial.set_user_attr("seconds", time.perf_counter() - started)
            trial.set_user_attr("error", reason)
            self.log(f"trial {label} {self._last['summary']}: FAILED: {reason}")
            if not isinstance(error, UdaciSenseError):  # a bug or a library's failure: its traceback, in the log file only
                self.logger.error(f"trial {label} failed", exc_info=error, extra=FILE_ONLY)
            raise
        measured["constraints"] = constraints
        self._last |= measured
        return values

    def _never_twice(self, trial: optuna.Trial) -> None:
        """A proxy configuration drawn before (by the sampler, or by another worker) is not run again: this draw is
        dropped (failed without a reason, so it counts as no trial) and a new point of the design takes its place."""
        key = configuration_key(trial.params)
        states = (TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING)
        earlier = next((t for t in self.studies["proxy"].get_trials(deepcopy=False, states=states)
                        if t.number != trial.number and (t.state != TrialState.FAIL or "error" in t.user_attrs)
                        and configuration_key(t.params) == key), None)
        if earlier is None:
            return
        try:
            self._queue(self._explore(1))
        except SpaceExhausted as error:
            self.exhausted = str(error)
        raise RepeatedConfiguration(f"trial {trial.number} drew trial {earlier.number}'s configuration again")

    def _queue_initial_design(self) -> None:
        """Keep the first trials' configurations in the study, once (:func:`initial_design`): they spread over the whole
        space before the sampler learns. Each is queued just before it runs (:meth:`_queue_design_point`), so that a
        trial queued again after an interruption runs first."""
        proxy = self.studies["proxy"]
        if "design" in proxy.user_attrs:
            return
        check_space_names(self.spec)
        points, used = initial_design(self.spec, self.hand_stages)
        proxy.set_user_attr("halton_used", used)
        proxy.set_user_attr("design", points)

    def _queue_design_point(self) -> None:
        """Queue the next configuration of the initial design, when no trial is waiting and one is left."""
        proxy = self.studies["proxy"]
        if proxy.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return
        design, done = proxy.user_attrs.get("design", []), proxy.user_attrs.get("design_queued", 0)
        if done < len(design):
            self._queue([design[done]])
            proxy.set_user_attr("design_queued", done + 1)

    def _explore(self, count: int) -> list[dict[str, Any]]:
        """``count`` configurations that no trial of the study has drawn or queued and the initial design does not hold
        (:func:`explore`, continued where the study's earlier draws left the sequence)."""
        proxy = self.studies["proxy"]
        seen = {configuration_key(t.params) for t in proxy.get_trials(deepcopy=False)}
        seen |= {configuration_key(t.system_attrs.get("fixed_params", {})) for t in proxy.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
        seen |= {configuration_key(point) for point in proxy.user_attrs.get("design", [])}
        points, used = explore(self.spec, count, seen, proxy.user_attrs.get("halton_used", 0))
        proxy.set_user_attr("halton_used", used)
        if count and not points:
            raise SpaceExhausted(f"no configuration of the space is left undrawn after {EXPLORE_ATTEMPTS} tries")
        return points

    def _queue(self, points: list[dict[str, Any]]) -> None:
        for point in points:
            self.studies["proxy"].enqueue_trial(point, skip_if_exists=True)

    def run_trial(self, recipe: dict[str, Any]) -> dict[str, Any]:
        """Run (or reuse) one trial recipe in ``trials/<hash>/`` and return its measured objectives."""
        key = config_hash({k: v for k, v in recipe.items() if k not in ("name", "description")})
        folder = self.folder / "trials" / key
        folder.parent.mkdir(parents=True, exist_ok=True)
        # Two workers on one machine may draw the same configuration: the second waits, then reuses the result.
        with open(folder.parent / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            result = finished_result(folder)
            if result is None:
                atomic_write(folder.parent / f"{key}.yaml", lambda handle: handle.write(yaml.safe_dump(recipe, sort_keys=False).encode()))
                pipeline = validate_recipe(copy.deepcopy(recipe) | {"name": key})
                if not folder.is_dir():
                    self._share_baseline(folder)
                with latency_threads(1):  # the objective; timing all cores too would cost a fresh process per artifact
                    result = run_pipeline(pipeline, folder.parent, resume=folder.is_dir(), name=key, report=False)
        kind = recipe["export"]["formats"][0]
        artifact = result["deploy"]["artifacts"][kind]
        if not artifact["validation"]["passed"]:  # its numbers are not the model's: never a point, a failed trial
            raise UdaciSenseError(f"{kind} failed validation: {'; '.join(artifact['validation']['failures'])}")
        baseline_top1 = result["baseline"]["metrics"]["test_top1"]  # the validation split: the trial recipe says evaluate_on val
        return {
            "top1": artifact["validation"]["top1"],
            "drop": baseline_top1 - artifact["validation"]["top1"],
            "baseline_top1": baseline_top1,
            "latency_ms": artifact["latency"]["1_thread"]["p50_ms"],
            "megabytes": artifact["bytes"] / 1e6,
            "key": key,
            "format": kind,
            "isa": result["machine"].get("isa"),
            # what each stage spent training: a promoted candidate's time is estimated from it (see next_trial)
            "train_seconds": {record["id"]: sum(row.get("wall_seconds") or row["seconds"] for row in record["info"].get("history", []))
                              for record in result["stages"]},
        }

    def _share_baseline(self, folder: Path) -> None:
        """Start a trial with a finished trial's baseline measurements (every trial has the same data and baseline):
        the runner reuses them instead of measuring the baseline again."""
        done = next((path for path in sorted((self.folder / "trials").iterdir()) if path.is_dir() and finished_result(path)), None)
        if done is not None:
            share_baseline(done, folder)

    def _train_baseline(self) -> Path:
        """A recipe without a baseline checkpoint: train it once, in ``search/baseline/``, for every trial."""
        raw = self.base | {"name": "baseline", "stages": [], "export": {"formats": []}}
        result = run_pipeline(validate_recipe(raw), self.folder, resume=(self.folder / "baseline").is_dir(), name="baseline")
        return Path(result["baseline"]["checkpoint"]).resolve()

    def _constraints_text(self) -> str:
        spec = self.spec
        parts = [f"drop <= {spec.max_drop:g} pt"]
        parts += [f"latency <= {spec.max_latency_ms:g} ms"] if spec.max_latency_ms else []
        parts += [f"size <= {spec.max_size_mb:g} MB"] if spec.max_size_mb else []
        return ", ".join(parts)

    # --- outputs ----------------------------------------------------------------------------------------

    def write_outputs(self, final: bool = False) -> dict[str, Any]:
        """``pareto.json``, ``pareto.png``, ``report.md``, ``points/*.yaml`` and ``best_*.yaml`` from every finished trial."""
        from udacisense.report.search import write_search_report

        points = self.points()
        feasible = [point for point in points if point["feasible"]]
        front = pareto_front(feasible) if feasible else sorted(points, key=lambda point: point["violation"])[:3]
        result = {
            "name": self.run_dir.name, "spec": self.spec.model_dump(mode="json"), "constraints": self._constraints_text(),
            "elapsed_seconds": self.elapsed(), "feasible_found": bool(feasible), "trial_count": sum(map(len, self._finished().values())),
            "trials": points, "front": front, "failed": self.failures(),
            "best": {objective: _best(feasible, objective) for objective in SUFFIX} if feasible else {},
        }
        if final and front:
            self._measure_on_test(front)
        current = {f"{point['key']}.yaml" for point in front}
        for stale in (self.folder / "points").glob("*.yaml"):
            if stale.name not in current:  # a point that has left the front (dominated, or replaced by its full fine-tune)
                stale.unlink()
        for point in front:
            point["recipe"] = self._write_point_recipe(point, self.folder / "points" / f"{point['key']}.yaml")
        for objective, point in result["best"].items():
            if point is not None:
                self._write_point_recipe(point, self.folder / f"best_{objective}.yaml")
        write_json(self.folder / "pareto.json", result)
        write_search_report(result, self.folder)
        return result

    def points(self) -> list[dict[str, Any]]:
        """Every finished trial as a point; a configuration measured at full fidelity replaces its proxy result."""
        by_params: dict[str, dict[str, Any]] = {}
        for fidelity in ("proxy", "full"):
            for trial in self.studies[fidelity].get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                by_params[json.dumps(trial.params, sort_keys=True)] = {
                    "trial": f"{fidelity[0]}{trial.number}", "fidelity": fidelity, "params": trial.params, "summary": trial.user_attrs["summary"],
                    "trial_recipe": trial.user_attrs["recipe"],
                    **{key: trial.user_attrs[key] for key in ("top1", "drop", "latency_ms", "megabytes", "key", "seconds", "isa")},
                    "feasible": feasible(trial.constraints), "violation": violation(trial.constraints),
                }
        return list(by_params.values())

    def failures(self) -> list[dict[str, str]]:
        """Every trial that failed on its own, with its one-line reason."""
        return [{"trial": f"{fidelity[0]}{trial.number}", "summary": trial.user_attrs.get("summary", ""), "error": trial.user_attrs["error"]}
                for fidelity, trials in self._finished().items() for trial in trials if trial.state == TrialState.FAIL]

    def _measure_on_test(self, front: list[dict[str, Any]]) -> None:
        """The final report's numbers: each front artifact on the test split, which no trial has seen, validated there
        against its source model with the trials' tolerance (a failure is recorded in ``validation_failures``)."""
        from udacisense.checkpoint import load_model
        from udacisense.data import dataset_for_contract
        from udacisense.deploy.runtime import load_runner
        from udacisense.deploy.validate import Tolerances, validate_artifact
        from udacisense.measure import source_logits
        from udacisense.pipeline.recipe import ExportSpec

        tolerances = Tolerances(ExportSpec.model_validate(self.base.get("export", {})).min_agreement)

        for point in front:
            folder = self.folder / "trials" / point["key"]
            result = finished_result(folder)
            if result is None:
                continue  # run by a worker on another machine: its own final pass measures it
            kind = point["trial_recipe"]["export"]["formats"][0]
            model, payload = load_model(Path(result["deploy"]["source"]["checkpoint"]))
            data = {key: value for key, value in self.base.get("data", {}).items() if key in ("val_fraction", "split_seed")}
            dataset = dataset_for_contract(payload["input"], root=self.base.get("data", {}).get("root"), **data)
            images, labels = dataset.whole("test")
            runner = load_runner(kind, artifact_file(folder, result, kind), threads=None)
            validation = validate_artifact(runner, images, labels, source_logits(model, images), quantized=FORMATS[kind].quantized,
                                           tolerances=tolerances)
            point["test_top1"] = validation["top1"]
            point["test_agreement"] = validation["agreement"]
            if validation["failures"]:
                point["validation_failures"] = [f"{kind} on the test split: {failure}" for failure in validation["failures"]]

    def _write_point_recipe(self, point: dict[str, Any], path: Path) -> str:
        """A recipe ``udacisense run`` reproduces: the trial's own, measured on the test split like any run."""
        recipe = copy.deepcopy(point["trial_recipe"])
        recipe["name"] = f"{self.run_dir.name}-{point['key'][:8]}"
        recipe["data"]["evaluate_on"] = "test"
        recipe["export"].pop("references")  # a reproduced point compares with the fp32 baseline in its runtime, as any run does
        recipe["description"] = recipe["description"].replace(" trial of search", " point of search")
        atomic_write(path, lambda handle: handle.write(yaml.safe_dump(recipe, sort_keys=False).encode()))
        return str(path)


def initial_design(spec: SearchSpec, hand_stages: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The first ``initial_trials`` configurations of a search, as trial values by name: the hand recipe's own point
    when there is one (so the search measures what it should beat), then points of a scrambled Halton sequence, all
    different; and how many Halton points were read."""
    points: list[dict[str, Any]] = []
    if hand_stages:
        point: dict[str, Any] = {}
        draw_pipeline(TrialDraw(spec, "proxy", recorded(recipe_pick(hand_stages), point)), spec)
        points.append(point)
    more, used = explore(spec, spec.initial_trials - len(points), {configuration_key(point) for point in points}, 0)
    return points + more, used


def check_space_names(spec: SearchSpec, draws: int = 64) -> None:
    """Every name in the search's ``space`` option must be a dimension some trial draws (a mistyped name would narrow
    nothing, in silence): the names met in ``draws`` quasi-random draws, which reach every branch of the spaces."""
    from scipy.stats import qmc

    if not spec.space:
        return
    sequence = qmc.Halton(d=HALTON_DIMENSIONS, scramble=True, seed=spec.seed)
    asked: set[str] = set()
    fixed: set[str] = set()
    for _ in range(draws):
        draw = TrialDraw(spec.model_copy(update={"space": {}}), "proxy", unit_pick(sequence.random(1)[0], {}))
        draw_pipeline(draw, spec)
        asked |= draw.asked
        fixed |= draw.set_names
    for name in spec.space:
        if name in fixed and name not in asked:
            raise UdaciSenseError(f"search.space.{name} is set by the stage, not drawn; fix it with search.stage_options instead")
        if name not in asked:
            raise UdaciSenseError(f"search.space.{name} is no dimension of the search ({did_you_mean(name, sorted(asked))})")


def explore(spec: SearchSpec, count: int, seen: set[str], start: int) -> tuple[list[dict[str, Any]], int]:
    """Up to ``count`` configurations not in ``seen`` from the scrambled Halton sequence of the search's seed, read from
    point ``start`` on; and where the reading stopped. Each point's first coordinates decide which stages are used,
    so consecutive points differ there first. Fewer than ``count`` when the space has no more to give."""
    from scipy.stats import qmc

    sequence = qmc.Halton(d=HALTON_DIMENSIONS, scramble=True, seed=spec.seed)
    sequence.fast_forward(start)
    points: list[dict[str, Any]] = []
    seen = set(seen)
    used = start
    stage_first = {stage.name: index for index, stage in enumerate(searched_stages(spec))}  # which stages: the first coordinates
    while len(points) < count and used - start < EXPLORE_ATTEMPTS:
        point: dict[str, Any] = {}
        draw_pipeline(TrialDraw(spec, "proxy", recorded(unit_pick(sequence.random(1)[0], dict(stage_first)), point)), spec)
        used += 1
        if configuration_key(point) not in seen:
            seen.add(configuration_key(point))
            points.append(point)
    return points, used


class BudgetSpent(UdaciSenseError):
    """Raised inside a trial when the search's budget runs out: the trial fails with this reason and the search ends."""


@contextlib.contextmanager
def budget_deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`BudgetSpent` in the block once ``seconds`` have passed, so that a trial slower than the budget rule
    expected (e.g. a larger architecture than the finished trials) cannot overrun the budget. Off the main thread, where
    Python delivers no signals, the block runs without a deadline."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise BudgetSpent("the search's budget ran out during this trial, which was stopped")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def next_trial(spec: SearchSpec, finished: dict[str, list[FrozenTrial]], candidate: FrozenTrial | None, elapsed: float) -> tuple[str | None, str]:
    """The queued full-fidelity ``candidate`` if its expected time fits in what is left of the budget, else a proxy
    trial if one fits, else nothing (None and the reason). This rule keeps the search within its budget
    without wasting a trial. A candidate is expected to take what its own proxy trial took with the fine-tunes scaled
    to the full epochs; a proxy trial, the mean of the finished ones. A trial that takes longer than that is stopped at
    the budget's end (:func:`budget_deadline`)."""
    count = sum(len(trials) for trials in finished.values())
    if spec.trials is not None and count >= spec.trials:
        return None, f"{count} trials finished (--trials {spec.trials})"

    def expected(fidelity: str) -> float:
        if fidelity == "full":
            proxy = next((t for t in finished["proxy"] if t.number == candidate.user_attrs.get("proxy_trial")), None)
            if proxy is not None and "seconds" in proxy.user_attrs:
                scale = proxy.user_attrs.get("epoch_scale", {})
                return proxy.user_attrs["seconds"] + sum(seconds * (scale.get(stage, 1.0) - 1)
                                                         for stage, seconds in proxy.user_attrs.get("train_seconds", {}).items())
        durations = [t.user_attrs["seconds"] for t in finished[fidelity] if "seconds" in t.user_attrs]
        return sum(durations) / len(durations) if durations else 0.0

    for fidelity in ("full", "proxy") if candidate else ("proxy",):
        if elapsed + expected(fidelity) <= spec.budget:
            return fidelity, ""
    return None, f"budget spent ({elapsed / 60:.1f} of {spec.budget / 60:.1f} min; a trial takes about {expected('proxy') / 60:.1f} min)"


def proxy_sampler(spec: SearchSpec) -> optuna.samplers.TPESampler:
    """The proxy study's sampler: multivariate TPE over the conditional space. It is constraint-aware through the
    values each trial stores with ``trial.set_constraint`` (:func:`constraint_values`): optuna 5 reads
    ``FrozenTrial.constraints`` of every finished trial and ranks a trial that misses a limit below every feasible one,
    by its summed miss. (TPESampler's ``constraints_func`` is deprecated in optuna 5 for exactly this, and would store
    the same values a second time, under other names, which ``FrozenTrial.constraints`` would then count twice.)"""
    seed = spec.seed if spec.storage is None else spec.seed + os.getpid()  # workers sharing a study: not the same start points
    # group: the space is conditional (a stage's parameters exist only when it is used), and the queued initial design
    # takes the place of TPE's own random start-up trials
    with warnings.catch_warnings():  # "experimental" notices about optuna's own options: nothing for a user to do
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=spec.initial_trials)


def constraint_values(measured: dict[str, Any], spec: SearchSpec) -> dict[str, float]:
    """By how much each limit is missed, as a share of the limit (optuna's convention: a value <= 0 is met). Shares,
    because a sum of misses ranks the points that miss (:func:`violation`, and optuna's sampler): points of accuracy,
    milliseconds and megabytes added as they come would let whichever unit has the largest numbers decide."""
    def miss(value: float, limit: float | None, floor: float = 0.0) -> float:
        return 0.0 if limit is None else (value - limit) / max(limit, floor)

    return {"drop": miss(measured["drop"], spec.max_drop, DROP_FLOOR), "latency": miss(measured["latency_ms"], spec.max_latency_ms),
            "size": miss(measured["megabytes"], spec.max_size_mb)}


def failure_reason(error: BaseException) -> str:
    """Why a trial failed, on one line: a user error's message as it stands (it is written for users), anything else
    as its type and message (a bug or a library's failure, whose traceback goes to the log file)."""
    message = " ".join(str(error).split())
    if isinstance(error, UdaciSenseError):
        label = getattr(error, "label", "error")  # a banner such as COMPRESSION FAILED says which kind of failure
        return message if label == "error" else f"{label}: {message}"
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def feasible(constraints: dict[str, float]) -> bool:
    return all(value <= 0 for value in constraints.values())


def violation(constraints: dict[str, float]) -> float:
    """How far a trial is from meeting every constraint (0 when it meets them all): the sum of its misses, each a share
    of its limit (see :func:`constraint_values`), so that no unit outweighs another."""
    return sum(max(0.0, value) for value in constraints.values())


def dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """``a`` is at least as good on top-1, latency and size, and better on one."""
    at_least = a["top1"] >= b["top1"] and a["latency_ms"] <= b["latency_ms"] and a["megabytes"] <= b["megabytes"]
    return at_least and (a["top1"] > b["top1"] or a["latency_ms"] < b["latency_ms"] or a["megabytes"] < b["megabytes"])


def pareto_front(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points no other point dominates, most accurate first."""
    front = [point for point in points if not any(dominates(other, point) for other in points)]
    return sorted(front, key=lambda point: -point["top1"])


def promotion_candidates(done: list[FrozenTrial], promoted: list[dict[str, Any]], count: int) -> list[FrozenTrial]:
    """Up to ``count`` finished proxy trials to rerun at full fidelity: the feasible front first (most accurate first),
    then other feasible trials, then those that miss only the accuracy drop, least first. Never a configuration promoted
    before, nor one without a fine-tune (static int8 of the unpruned model is already at full fidelity), nor one over
    the size or latency limit: the architecture fixes those, so a longer fine-tune cannot bring it within them, while
    a proxy's accuracy is what the full fine-tune raises."""
    seen = {json.dumps(params, sort_keys=True) for params in promoted}
    points = {t.number: {"top1": t.values[0], "latency_ms": t.values[1], "megabytes": t.values[2]} for t in done if feasible(t.constraints)}
    front = {number for number, point in points.items() if not any(dominates(other, point) for other in points.values())}
    ranked = sorted(done, key=lambda t: (t.number not in front, violation(t.constraints), -t.values[0]))
    return [t for t in ranked if t.user_attrs.get("fine_tunes") and json.dumps(t.params, sort_keys=True) not in seen
            and all(t.constraints.get(key, 0.0) <= 0 for key in FIXED_BY_ARCHITECTURE)][:count]


def promotions_done(proxy: optuna.Study) -> int:
    """How many promotions the study has had: one ``promotion_<n>`` user attr each (a search started before this
    rule marked them ``promoted_at_<count>``)."""
    return sum(key.startswith((PROMOTION, "promoted_at_")) for key in proxy.user_attrs)


def promotion_due(proxy: optuna.Study, spec: SearchSpec) -> bool:
    """Whether another promotion is due: once ``promote_every`` more proxy trials have finished than the promotions
    so far account for. An inequality, not "a multiple of promote_every", because workers sharing a study may each
    find the count already past the multiple (two trials finished at once) and would all skip it."""
    complete = proxy.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return len(complete) >= (promotions_done(proxy) + 1) * spec.promote_every


def promote(studies: dict[str, optuna.Study], spec: SearchSpec) -> list[FrozenTrial]:
    """Queue the next promotion's candidates (:func:`promotion_candidates`) in the full study and count it; returns
    them (none when no promotion is due: another worker has just done it). Two workers doing the same promotion at
    once count it once (both write the same ``promotion_<n>``) and queue a configuration once (``skip_if_exists``)."""
    proxy, full = studies["proxy"], studies["full"]
    number = promotions_done(proxy) + 1
    done = proxy.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < number * spec.promote_every:
        return []
    # a queued candidate has no params until it runs: it is known by the proxy trial it came from
    queued = {t.user_attrs.get("proxy_trial") for t in full.get_trials(deepcopy=False)}
    promoted = [t.params for t in full.get_trials(deepcopy=False)] + [t.params for t in done if t.number in queued]
    chosen = promotion_candidates(done, promoted, spec.promote)
    for trial in chosen:
        full.enqueue_trial(trial.params, user_attrs={"proxy_trial": trial.number}, skip_if_exists=True)
    proxy.set_user_attr(f"{PROMOTION}{number}", len(done))  # after queueing: a worker killed in between promotes again
    return chosen


def _best(points: list[dict[str, Any]], objective: str) -> dict[str, Any]:
    if objective == "accuracy":
        return max(points, key=lambda point: (point["top1"], -point["latency_ms"]))
    field = "latency_ms" if objective == "latency" else "megabytes"
    return min(points, key=lambda point: (point[field], -point["top1"]))


def front_runs(run_dir: Path) -> list[tuple[str, Path]] | None:
    """(trial label, its run folder) for each point of the search in ``run_dir``'s front; None when ``run_dir`` holds no search."""
    path = run_dir / SEARCH_FOLDER / "pareto.json"
    if not path.is_file():
        return None
    return [(point["trial"], run_dir / SEARCH_FOLDER / "trials" / point["key"]) for point in json.loads(path.read_text())["front"]]


def show_search(run_dir: Path) -> str:
    """The front of a search folder as a table (``udacisense search --show NAME``)."""
    from udacisense.report.search import front_table

    path = run_dir / SEARCH_FOLDER / "pareto.json"
    if not path.is_file():
        raise UdaciSenseError(f"{path} does not exist; start the search with 'udacisense search ... --name {run_dir.name}'")
    return front_table(json.loads(path.read_text()))
