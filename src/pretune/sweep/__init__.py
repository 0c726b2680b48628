"""Hyper-parameter search (Optuna TPE / random / grid) and k-fold cross-validation, for every
task kind.

``run_sweep(cfg)`` searches a ``SweepConfig.space`` of dotted ``FinetuneConfig`` keys, scoring
every trial on the VALIDATION split (or the k-fold CV mean over train+val), never on test.
``cross_validate(cfg, k)`` is the k-fold engine on its own. The space's checks live with its
config (``pretune.config.sweep``).
"""

from pretune.sweep.kfold import CVResult, cross_validate, fold_indices, make_folds
from pretune.sweep.search import run_sweep

__all__ = ["CVResult", "cross_validate", "fold_indices", "make_folds", "run_sweep"]
