"""``pretune sweep``: Optuna search over a FinetuneConfig, stored in SQLite so it resumes.

Layout of ``<output_dir>/<name>/``: ``optuna.db`` (the study), ``sweep.yaml`` (the config it was
started with), ``trials/<number>/`` (each trial's finetune output, or ``fold-<i>/`` + ``cv.json``
with k-fold), then ``trials.csv``, ``best.yaml``, ``summary.json``, ``report.md``/``.html``.

Resume: running the same config again continues the study; COMPLETE and PRUNED trials count
toward ``n_trials``. A trial left RUNNING by a killed process is marked FAIL (not counted) and
its parameters are queued again, so a grid never loses a point. A lock file keeps two processes
from driving one sweep at once.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pretune.config import FinetuneConfig, ParamSpec, SweepConfig
from pretune.config.sweep import apply_params, grid_space
from pretune.errors import PretuneError
from pretune.evaluate.metrics import metric_mode
from pretune.finetune.run import finetune, selection_metric
from pretune.sweep.kfold import cross_validate, fold_indices
from pretune.sweep.report import write_outputs
from pretune.tasks import get_kind
from pretune.tasks.base import TaskKind
from pretune.train.rundir import mark_run, remove_run, run_lock
from pretune.train.trackers import RunInfo, flat_params

# Settings that may change between runs of one sweep (how long/wide it runs, not what it does).
RESUMABLE = {"n_trials", "timeout_minutes", "n_jobs", "save_models"}
MAX_RETRIES = 2  # re-queues of a trial killed mid-run


def sweep_dir(cfg: SweepConfig) -> Path:
    return Path(cfg.output_dir) / cfg.name


# --------------------------------------------------------------------------- guards


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _check_same_sweep(root: Path, cfg: SweepConfig) -> None:
    """Resuming with a different space/base would mix incomparable trials in one study."""
    saved = root / "sweep.yaml"
    if (root / "optuna.db").exists() and saved.is_file():
        old = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
        new = json.loads(json.dumps(cfg.model_dump(mode="json")))
        changed = [k for k in _diff_keys(old, new) if k.split(".")[0] not in RESUMABLE]
        if changed:
            raise PretuneError(
                f"{root} holds a sweep started with a different config (changed: "
                f"{', '.join(changed[:5])}); run it with the same config to resume, or pass "
                "--overwrite / choose another name=")
    saved.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def resolve_metric(cfg: SweepConfig, kind: TaskKind, task: Any) -> str:
    """The validation metric to optimise; checked against the metrics the task produces."""
    metric = selection_metric(cfg.base, kind, task) if cfg.metric == "auto" else cfg.metric
    names = kind.metric_names(task)
    if metric not in names:
        raise PretuneError(f"sweep metric '{metric}' is not a metric of {task.type} task "
                           f"{task.name}; choose one of: {', '.join(sorted(names))}")
    return metric


# --------------------------------------------------------------------------- study


def _sampler(cfg: SweepConfig) -> Any:
    import optuna

    if cfg.sampler == "grid":
        return optuna.samplers.GridSampler(grid_space(cfg.space), seed=cfg.seed)
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    return optuna.samplers.TPESampler(seed=cfg.seed)


def make_pruner(cfg: SweepConfig) -> Any:
    """Median pruning of intermediate validation scores (per fold with k-fold)."""
    import optuna

    if cfg.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)


def open_study(cfg: SweepConfig, root: Path, direction: str) -> Any:
    import optuna

    storage = optuna.storages.RDBStorage(
        f"sqlite:///{(root / 'optuna.db').resolve()}",
        engine_kwargs={"connect_args": {"timeout": 60}},  # parallel trials wait for the lock
    )
    study = optuna.create_study(storage=storage, study_name=cfg.name, sampler=_sampler(cfg),
                                pruner=make_pruner(cfg), direction=direction,
                                load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise PretuneError(f"{root}/optuna.db optimises in the other direction; pass --overwrite")
    return study


def recover_stale(study: Any, cfg: SweepConfig) -> list[int]:
    """Trials left RUNNING (their process died): mark FAIL and queue their params again."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        study.tell(t.number, state=TrialState.FAIL)
        retries = int(t.user_attrs.get("retries", 0))
        if set(t.params) == set(cfg.space) and retries < MAX_RETRIES:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number,
                                                            "retries": retries + 1})
    return [t.number for t in stale]


def _point(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def remaining_trials(study: Any, cfg: SweepConfig) -> int | None:
    """Trials still to run: ``n_trials`` minus COMPLETE/PRUNED (and the grid's unvisited points);
    None when only the timeout bounds it."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    left = None if cfg.n_trials is None else cfg.n_trials - done
    if cfg.sampler == "grid":
        retried = {t.user_attrs.get("retry_of") for t in trials}
        visited = {_point(t.params) for t in trials if t.state.is_finished()
                   and not (t.state == TrialState.FAIL and t.number in retried)}
        size = math.prod(len(v) for v in grid_space(cfg.space).values())
        grid_left = size - len(visited)
        left = grid_left if left is None else min(left, grid_left)
    return None if left is None else max(left, 0)


def suggest(trial: Any, key: str, spec: ParamSpec) -> Any:
    """Sample one value with an ``optuna.Trial`` (the grid sampler answers from its grid)."""
    if spec.choices is not None:
        return trial.suggest_categorical(key, spec.choices)
    assert spec.low is not None and spec.high is not None
    if spec.integer:
        return trial.suggest_int(key, int(spec.low), int(spec.high), step=int(spec.step or 1),
                                 log=spec.log)
    return trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=spec.log)


# --------------------------------------------------------------------------- one trial


class _Trials:
    """What every trial shares: the sweep config, resolved metric, loaded tasks, features."""

    def __init__(self, cfg: SweepConfig, root: Path, metric: str) -> None:
        self.cfg, self.root, self.metric = cfg, root, metric
        self.features: dict = {}  # sklearn linear-probe features, keyed by start model
        self._tasks: dict[tuple[str, int], Any] = {}
        self._lock = threading.Lock()

    def run_info(self, ft: FinetuneConfig, number: int, params: dict[str, Any]) -> RunInfo:
        """A trial in the trackers: one run in the sweep's experiment, its sampled values
        as hyper-parameters beside the rest of its config."""
        return RunInfo(f"trial-{number}", self.cfg.name, self.root,
                       {**flat_params(ft), **{f"sweep.{k}": v for k, v in params.items()}})

    def task(self, ft: FinetuneConfig) -> Any:
        # Same task config + seed -> same splits and budget, so trials load it once.
        key = (ft.task.model_dump_json(), ft.train.seed)
        with self._lock:
            if key not in self._tasks:
                self._tasks[key] = get_kind(ft.task.kind).load(ft)
            return self._tasks[key]


def _reporter(trial: Any) -> Any:
    import optuna

    def report(step: int, value: float | None) -> None:
        if value is None or not math.isfinite(value):
            return
        trial.report(float(value), step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} (intermediate value {value:.4f})")

    return report


def trial_config(cfg: SweepConfig, root: Path, number: int, params: dict[str, Any]
                 ) -> FinetuneConfig:
    ft = apply_params(cfg.base, params)
    train = ft.train.model_copy(update={"progress": False}) if cfg.n_jobs > 1 else ft.train
    return ft.model_copy(update={"name": str(number), "output_dir": str(root / "trials"),
                                 "save_model": ft.save_model and cfg.save_models,
                                 "train": train})


def objective(trial: Any, ctx: _Trials) -> float:
    """Score one parameter set on validation (or the k-fold CV mean)."""
    cfg = ctx.cfg
    params = {key: suggest(trial, key, spec) for key, spec in cfg.space.items()}
    report = _reporter(trial)
    try:
        ft = trial_config(cfg, ctx.root, trial.number, params)
        task = ctx.task(ft)
        if cfg.kfold:
            scores: list[float] = []

            def on_fold(i: int, score: float) -> None:
                scores.append(score)
                report(i, float(np.mean(scores)))  # running CV mean: comparable across trials

            cv = cross_validate(ft, cfg.kfold, out_dir=ctx.root / "trials" / str(trial.number),
                                task=task, metric=ctx.metric, overwrite=True,
                                features_cache=ctx.features, on_fold=on_fold,
                                run_info=ctx.run_info(ft, trial.number, params))
            trial.set_user_attr("std", cv.std)
            trial.set_user_attr("fold_scores", cv.fold_scores)
            trial.set_user_attr("val_metrics", cv.mean_metrics)
            return cv.mean
        # per-evaluation pruning: validation after each epoch reports to the pruner
        result = finetune(ft, overwrite=True, task=task, features_cache=ctx.features,
                          run_info=ctx.run_info(ft, trial.number, params),
                          quiet=not ft.train.progress,
                          on_evaluate=lambda i, m: report(i, m.get(ctx.metric)))
        if getattr(result, "stopped_reason", "") == "interrupted":
            raise KeyboardInterrupt  # Ctrl-C ended training early: not a real score
        val = {k: float(v) for k, v in result.val_metrics.items() if isinstance(v, int | float)}
        trial.set_user_attr("val_metrics", val)
        if ctx.metric not in val:  # e.g. roc_auc with a one-class validation split
            raise PretuneError(f"validation metric '{ctx.metric}' was not computed for this "
                               f"trial (have: {', '.join(sorted(val))})")
        return val[ctx.metric]
    except PretuneError as e:
        trial.set_user_attr("error", str(e))
        _failed_line(ctx.root, trial.number, str(e))
        raise
    except RuntimeError as e:  # e.g. CUDA out of memory for a large batch: record, go on
        first_line = (str(e).splitlines() or [""])[0]
        trial.set_user_attr("error", f"{type(e).__name__}: {first_line}")
        _failed_line(ctx.root, trial.number, f"{type(e).__name__}: {first_line}")
        raise


def _failed_line(root: Path, number: int, error: str) -> None:
    """One line per failed trial; its traceback goes to the trial's own log file."""
    log = root / "trials" / f"{number}.traceback.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(traceback.format_exc())
    print(f"trial {number} failed: {error.splitlines()[0][:200]} (traceback: {log})", flush=True)


class _NoFailedTrialTracebacks(logging.Filter):
    """Optuna logs each failed trial with its full traceback; ``objective`` already printed
    one line and saved the traceback, so drop Optuna's copy."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Trial ") and " failed with " in msg)


# --------------------------------------------------------------------------- entry point


def run_sweep(cfg: SweepConfig, overwrite: bool = False) -> Path:
    """Run (or resume) the sweep; write trials.csv, best.yaml, report.md/.html. Returns its dir.

    Every trial is scored on the validation split (or the k-fold CV mean over train+val),
    never on the test split. ``overwrite`` deletes an existing sweep directory first."""
    root = sweep_dir(cfg)
    with run_lock(root):
        if overwrite:
            remove_run(root)
        mark_run(root)
        _check_same_sweep(root, cfg)
        kind = get_kind(cfg.base.task.kind)
        task = kind.load(cfg.base)
        if cfg.kfold:  # fail now, not after the first trial (e.g. k > smallest class)
            fold_indices(kind.fold_labels(kind.pool(task)), task.type, cfg.kfold,
                         cfg.base.task.split_seed, task.labels)
        elif not len(task.val):
            raise PretuneError("sweep needs a validation split to score trials: set "
                               "base.task.val_fraction > 0 or base.task.validation, or use kfold")
        metric = resolve_metric(cfg, kind, task)
        direction = "minimize" if metric_mode(metric) == "min" else "maximize"
        study = open_study(cfg, root, direction)
        stale = recover_stale(study, cfg)
        if stale:
            print(f"sweep {cfg.name}: trials {stale} were interrupted; marked failed, re-queued")
        left = remaining_trials(study, cfg)
        ctx = _Trials(cfg, root, metric)
        interrupted = False
        try:
            quiet = _NoFailedTrialTracebacks()
            optuna_log = logging.getLogger("optuna.study._optimize")
            optuna_log.addFilter(quiet)
            try:
                if left is None or left > 0:
                    study.optimize(lambda t: objective(t, ctx), n_trials=left,
                                   timeout=cfg.timeout_minutes * 60 if cfg.timeout_minutes
                                   else None, n_jobs=cfg.n_jobs,
                                   catch=(PretuneError, RuntimeError))
            finally:
                optuna_log.removeFilter(quiet)
        except KeyboardInterrupt:
            interrupted = True
        summary = write_outputs(root, cfg, study, metric, direction)
    if interrupted:
        print(f"sweep {cfg.name} interrupted; run the same command again to resume")
        raise KeyboardInterrupt
    if summary["best"] is None:
        errors = summary.get("errors") or ["no trial finished"]
        raise PretuneError(f"no trial of sweep {cfg.name} completed (see {root}/trials.csv); "
                           f"first error: {errors[0]}")
    best = summary["best"]
    print(f"sweep {cfg.name}: best trial {best['number']} {metric}={best['value']:.4f} "
          f"(validation); report: {root / 'report.html'}; retrain: pretune finetune "
          f"{root / 'best.yaml'}")
    return root
