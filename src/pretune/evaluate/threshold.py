"""The decision threshold of a binary classifier (``threshold: auto``): the cut-off on the
positive class's probability that maximises its F1 on validation.

The positive class is the minority of the training split (label id 1 when balanced). A tuned
threshold is applied by remapping that probability monotonically so that the threshold lands at
0.5: argmax then gives the tuned decision, and rank metrics (ROC-AUC) are unchanged. The saved
model carries ``threshold`` and ``positive`` in ``pretune_task.json``; ``predict`` and
``evaluate`` apply them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np


def positive_class(train_labels: list[int]) -> int:
    """The minority class of a binary training split (1 on a tie)."""
    counts = Counter(int(y) for y in train_labels)
    return 0 if counts.get(0, 0) < counts.get(1, 0) else 1


def tune(probs: np.ndarray, labels: list[int] | np.ndarray, positive: int) -> float:
    """The F1-optimal threshold on ``probs[:, positive]`` (midpoints between distinct
    scores; 0.5 when validation has no positive example)."""
    y = np.asarray(labels) == positive
    p = np.asarray(probs)[:, positive]
    if not y.any() or y.all():
        return 0.5
    cands = np.unique(p)
    cuts = np.concatenate([[cands[0] - 1e-6], (cands[:-1] + cands[1:]) / 2])
    best, best_f1 = 0.5, -1.0
    for t in cuts:
        pred = p > t
        tp = float(np.sum(pred & y))
        f1 = 2 * tp / max(float(np.sum(pred)) + float(np.sum(y)), 1e-12)
        if f1 > best_f1 + 1e-12 or (abs(f1 - best_f1) <= 1e-12 and abs(t - 0.5) < abs(best - 0.5)):
            best, best_f1 = float(t), f1
    return float(np.clip(best, 1e-4, 1 - 1e-4))


def apply(probs: np.ndarray, positive: int, threshold: float) -> np.ndarray:
    """Binary probabilities remapped so that ``threshold`` on the positive class becomes 0.5
    (piecewise linear, monotone: ROC-AUC is unchanged, argmax is the tuned decision)."""
    p = np.asarray(probs, dtype=float)[:, positive]
    t = float(threshold)
    q = np.where(p <= t, p * 0.5 / t, 0.5 + (p - t) * 0.5 / (1 - t))
    out = np.empty((len(p), 2))
    out[:, positive], out[:, 1 - positive] = q, 1 - q
    return out


def applies(task: Any, setting: Any) -> bool:
    """Binary single-label classification with the threshold not switched off."""
    return setting != "off" and getattr(task, "type", None) == "single_label" \
        and len(getattr(task, "labels", []) or []) == 2


def tuned_metrics(metrics: dict[str, Any], threshold: float, positive: str) -> dict[str, Any]:
    """``metrics`` at the tuned threshold as ``tuned_<name>`` (scalars), with the threshold."""
    out: dict[str, Any] = {f"tuned_{k}": v for k, v in metrics.items()
                           if isinstance(v, int | float) and not isinstance(v, bool)
                           and not k.startswith("roc_auc")}
    return {"threshold": threshold, "threshold_positive": positive, **out}


__all__ = ["applies", "apply", "positive_class", "tune", "tuned_metrics"]
