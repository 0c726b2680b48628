"""Hyper-parameter search (Optuna TPE / random / grid) and k-fold cross-validation.

``run_sweep(cfg)`` searches a ``SweepConfig.space`` of dotted ``FinetuneConfig`` keys, scoring
every trial on the VALIDATION split (or the k-fold CV mean over train+val), never on test.
``cross_validate(cfg, k)`` is the k-fold engine on its own.

Exports are resolved lazily: ``pretune.config`` imports ``pretune.sweep.space`` to validate a
sweep config, and that must not pull in torch/optuna.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CVResult", "cross_validate", "fold_indices", "make_folds", "run_sweep"]


def __getattr__(name: str) -> Any:
    if name == "run_sweep":
        from pretune.sweep.search import run_sweep

        return run_sweep
    if name in ("CVResult", "cross_validate", "fold_indices", "make_folds"):
        from pretune.sweep import kfold

        return getattr(kfold, name)
    raise AttributeError(f"module 'pretune.sweep' has no attribute {name!r}")
