"""k-fold cross-validation of one FinetuneConfig (any task kind) over the task's train+val pool.

Each fold trains on k-1 folds and is scored on the held-out fold (the test split is never
looked at for selection). Folds are stratified by class for single-label tasks (scikit-learn
``StratifiedKFold``) and plain ``KFold`` for multi-label and regression. Fold membership depends
only on the task and ``task.split_seed``, so every trial of a sweep sees the same folds.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pretune.config import FinetuneConfig
from pretune.errors import PretuneError
from pretune.finetune.run import finetune, prepare_task, selection_metric
from pretune.tasks import get_kind
from pretune.tasks.base import TaskKind, scalars
from pretune.train.rundir import mark_run, remove_run
from pretune.train.trackers import RunInfo


@dataclass
class CVResult:
    metric: str
    mean: float  # mean of fold_scores
    std: float  # sample standard deviation (ddof=1) of fold_scores
    fold_scores: list[float]
    fold_metrics: list[dict[str, float]]  # validation metrics of each fold (scalars)
    mean_metrics: dict[str, float] = field(default_factory=dict)
    std_metrics: dict[str, float] = field(default_factory=dict)
    out_dir: Path | None = None


def fold_indices(labels: Sequence[Any], task_type: str, k: int, seed: int = 0,
                 label_names: Sequence[str] | None = None) -> list[np.ndarray]:
    """Held-out example indices of each of the ``k`` folds (disjoint, covering all examples).

    Single-label: stratified, so every fold holds each class in proportion; a class with fewer
    than ``k`` examples cannot be in every fold and is a PretuneError naming it."""
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(labels)
    if k < 2:
        raise PretuneError(f"kfold={k}: k-fold cross-validation needs k >= 2")
    if n < k:
        raise PretuneError(f"kfold={k} is larger than the {n} examples of train+val; lower kfold")
    idx = np.arange(n)
    if task_type == "single_label":
        counts = Counter(labels)
        label, smallest = min(counts.items(), key=lambda kv: (kv[1], str(kv[0])))
        if smallest < k:
            name = label_names[label] if label_names is not None else label
            raise PretuneError(
                f"kfold={k} is larger than class '{name}', which has only {smallest} examples in "
                f"train+val; lower kfold to at most {smallest} or add examples of '{name}'")
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        return [held for _, held in splitter.split(idx, np.asarray(labels))]
    splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
    return [held for _, held in splitter.split(idx)]


def make_folds(kind: TaskKind, task: Any, k: int, seed: int = 0) -> list[Any]:
    """k tasks: train = the other k-1 folds of train+val, val = this fold, test unchanged."""
    everything = kind.pool(task)
    folds = fold_indices(kind.fold_labels(everything), task.type, k, seed, task.labels)
    out = []
    for i, held in enumerate(folds):
        keep = np.setdiff1d(np.arange(len(everything)), held)
        out.append(kind.refold(task, everything.subset(keep), everything.subset(held), i, k))
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def cross_validate(cfg: FinetuneConfig, k: int, *, out_dir: str | Path | None = None,
                   task: Any | None = None, metric: str | None = None,
                   overwrite: bool = False, features_cache: dict | None = None,
                   on_fold: Callable[[int, float], None] | None = None,
                   run_info: RunInfo | None = None) -> CVResult:
    """Fine-tune ``cfg`` once per fold; return the mean ± std of the validation ``metric``.

    ``metric`` defaults to ``cfg.metric`` (auto: macro_f1 / r2). Each fold's finetune output goes
    to ``out_dir/fold-<i>/`` (default ``<cfg.output_dir>/<cfg.name>``) and the summary with the
    per-fold metrics to ``out_dir/cv.json``. ``on_fold(i, score)`` runs after each fold and may
    raise (a sweep raises ``optuna.TrialPruned`` there). ``task`` (a loaded task) is used as-is,
    with ``cfg.task.budget`` applied like ``finetune`` does."""
    kind = get_kind(cfg.task.kind)
    out = Path(out_dir) if out_dir is not None else Path(cfg.output_dir) / cfg.name
    if out.exists():
        if not overwrite:
            raise PretuneError(f"{out} already exists; pass --overwrite or choose another name=")
        remove_run(out)
    task = prepare_task(cfg, task, kind)
    metric = metric or selection_metric(cfg, kind, task)
    folds = make_folds(kind, task, k, cfg.task.split_seed)
    mark_run(out)
    cache = features_cache if features_cache is not None else {}  # folds share the extractor
    scores: list[float] = []
    per_fold: list[dict[str, Any]] = []
    for i, fold_task in enumerate(folds):
        fold_cfg = cfg.model_copy(update={"name": f"fold-{i}", "output_dir": str(out)})
        result = finetune(fold_cfg, overwrite=True, task=fold_task, features_cache=cache,
                          run_info=run_info and RunInfo(
                              f"{run_info.name}-fold-{i}", run_info.experiment, run_info.root,
                              {**run_info.params, "fold": i}),
                          quiet=not cfg.train.progress)
        if getattr(result, "stopped_reason", "") == "interrupted":
            raise KeyboardInterrupt  # Ctrl-C stopped training early: not a real score
        val = scalars(result.val_metrics)
        if metric not in val:
            raise PretuneError(f"metric '{metric}' is not a validation metric of {task.name}; "
                               f"choose one of: {', '.join(sorted(val))}")
        scores.append(val[metric])
        per_fold.append({
            "fold": i, "train_examples": len(fold_task.train), "val_examples": len(fold_task.val),
            "val_class_counts": _class_counts(kind, fold_task), "val": val,
        })
        if on_fold is not None:
            on_fold(i, val[metric])
    mean, std = _mean_std(scores)
    common = set.intersection(*(set(f["val"]) for f in per_fold))
    stats = {m: _mean_std([f["val"][m] for f in per_fold]) for m in sorted(common)}
    res = CVResult(metric, mean, std, scores, [f["val"] for f in per_fold],
                   {m: s[0] for m, s in stats.items()}, {m: s[1] for m, s in stats.items()}, out)
    payload = {"k": k, "metric": metric, "mean": mean, "std": std, "fold_scores": scores,
               "mean_metrics": res.mean_metrics, "std_metrics": res.std_metrics,
               "folds": per_fold, "split_seed": cfg.task.split_seed,
               "config": cfg.model_dump(mode="json")}
    (out / "cv.json").write_text(json.dumps(payload, indent=2, default=float))
    return res


def _class_counts(kind: TaskKind, task: Any) -> dict[str, int] | None:
    if task.type != "single_label":
        return None
    counts = Counter(kind.fold_labels(task.val))
    return {task.labels[c]: counts.get(c, 0) for c in range(len(task.labels))}

