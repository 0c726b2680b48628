"""The scikit-learn linear probe, for every task kind: pooled features of the frozen start
(extracted once, cached across runs of one study or sweep) -> standardise -> logistic
regression (ridge for regression), C picked on validation. No training loop; every run
exports a model dir predict / evaluate read, as its kind writes it (``TaskKind.probe_export``):
text, the encoder + the fitted head (``pretune.models.probe_head``); images, a plain image
classifier whose linear layer holds the fitted head.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pretune.config import FinetuneConfig
from pretune.evaluate.metrics import default_metric, task_metrics
from pretune.finetune.result import Trained
from pretune.models.probe_head import PROBE_FILE, head_arrays
from pretune.models.start import Start
from pretune.tasks.base import Loaded, TaskKind


def _cache_key(cfg: FinetuneConfig, start: Start) -> str:
    """Identity of the feature extractor: the start, and for random init what shapes it."""
    key = f"{start.identity()}:{cfg.task.model_dump_json(exclude={'budget'})}"
    if start.random_init:  # the weights depend on the seed, overrides and tokenizer
        key += f":{sorted(cfg.model.overrides.items())}:{cfg.tokenizer}:{cfg.train.seed}"
    return key


def probe_features(kind: TaskKind, loaded: Loaded, split: Any, cfg: FinetuneConfig,
                   start: Start, device: torch.device, cache: dict | None) -> np.ndarray:
    """Features of ``split``; examples already in ``cache`` (same extractor) are reused."""
    batch_size = kind.eval_batch_size(cfg)
    keys = kind.feature_keys(split) if cache is not None else None
    if keys is None:
        return kind.features(loaded, split, cfg.task, batch_size, device)
    store = cache.setdefault(_cache_key(cfg, start), {})
    todo = [i for i, k in enumerate(keys) if k not in store]
    if todo:
        feats = kind.features(loaded, split.subset(todo), cfg.task, batch_size, device)
        for i, f in zip(todo, feats, strict=True):
            store[keys[i]] = f
    return np.stack([store[k] for k in keys]) if keys else np.zeros((0, 1), np.float32)


def run_probe(kind: TaskKind, cfg: FinetuneConfig, task: Any, start: Start,
              device: torch.device, cache: dict | None) -> Trained:
    """The probe's test and validation outputs, fitted parameters and its export."""
    loaded = kind.load_encoder(cfg, task, start)
    loaded.model.to(device)
    x = {}
    for s in ("train", "val", "test"):
        t0, split = time.perf_counter(), getattr(task, s)
        x[s] = probe_features(kind, loaded, split, cfg, start, device, cache)
        took = time.perf_counter() - t0
        if cfg.train.progress and took > 1.0:  # cached features take no time: no line
            print(f"probe: features of {len(split):,} {s} {kind.example_word} in {took:.0f} s "
                  f"({len(split) / took:,.0f}/s)", flush=True)
    y_train, task_type = kind.probe_targets(task, task.train)
    y_val, _ = kind.probe_targets(task, task.val)
    est = fit_sklearn_probe(x["train"], y_train, x["val"], y_val, task_type, task.labels,
                            cfg.train.seed, balanced=cfg.class_weights is True)
    val_out = probe_outputs(est, x["val"], task_type, len(task.labels)) if len(task.val) else None
    test_out = probe_outputs(est, x["test"], task_type, len(task.labels))
    coef = getattr(est[-1], "coef_", None)
    fitted = int(np.size(coef) + np.size(getattr(est[-1], "intercept_", 0))) \
        if coef is not None else 0
    extra = {"probe": {"file": PROBE_FILE, "pooling": "mean",
                       "C": float(est[-1].C) if hasattr(est[-1], "C") else None}}
    export, auto_class, tag = kind.probe_export(
        loaded, head_arrays(est, task_type, len(task.labels)), cfg, task, extra)
    return Trained(test_out, val_out, fitted, export=export, auto_class=auto_class,
                   pipeline_tag=tag)


def fit_sklearn_probe(x_train: np.ndarray, y_train: list, x_val: np.ndarray, y_val: list,
                      task_type: str, labels: list[str], seed: int = 0,
                      balanced: bool = False) -> Any:
    """Standardise + LogisticRegression (Ridge for regression); C / alpha picked on val.
    ``balanced``: class weights inversely proportional to the class frequencies."""
    def make(c: float) -> Any:
        if task_type == "regression":
            est: Any = Ridge(alpha=1.0 / c)
        else:
            est = LogisticRegression(C=c, max_iter=2000, random_state=seed,
                                     class_weight="balanced" if balanced else None)
            if task_type == "multi_label":
                est = OneVsRestClassifier(est)
        return make_pipeline(StandardScaler(), est)

    y = np.asarray(y_train)
    grid = [0.01, 0.1, 1.0] if len(y_val) else [0.1]
    best, best_score = None, -np.inf
    metric = default_metric(task_type)
    for c in grid:
        est = make(c).fit(x_train, y)
        if len(grid) == 1:
            return est
        outputs = probe_outputs(est, x_val, task_type, len(labels))
        score = task_metrics(task_type, y_val, outputs, labels)
        if score[metric] > best_score:
            best, best_score = est, score[metric]
    return best


def probe_outputs(est: Any, x: np.ndarray, task_type: str, num_labels: int) -> np.ndarray:
    """Probabilities (N, C) aligned with label ids, or regression values (N,)."""
    if task_type == "regression":
        return est.predict(x)
    probs = est.predict_proba(x)
    if task_type == "single_label":
        # Classes absent from a tiny training set are missing columns: put them back as 0.
        classes = est.classes_
        full = np.zeros((len(x), num_labels))
        full[:, classes] = probs
        return full
    return probs
