"""What a fine-tuning run hands back: ``Trained`` from each strategy's runner (loop, scikit-learn
probe, prompting) to the one fine-tuning path, and ``FinetuneResult`` from that path to its
callers (the CLI, sweeps, k-fold, studies)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Trained:
    test_outputs: np.ndarray
    val_outputs: np.ndarray | None
    trainable_params: int
    steps: int = 0
    stopped_reason: str = ""  # from the loop: "interrupted" when SIGINT/SIGTERM cut it short
    # writes the model's Hugging Face files into an empty directory (None: nothing to save)
    export: Callable[[Path], None] | None = None
    auto_class: str | None = None  # the transformers class that loads it, when not the kind's
    pipeline_tag: str | None = None  # the pipeline it serves, when not the kind's
    tokens: int = 0  # training tokens (images) the loop consumed
    flops: float | None = None  # ≈ training FLOPs (6 N per token + attention; None: unknown)


@dataclass
class FinetuneResult:
    metrics: dict[str, Any]  # test split
    val_metrics: dict[str, Any]
    out_dir: Path
    seconds: float
    train_examples: int
    trainable_params: int
    steps: int
    stopped_reason: str = ""  # from the loop: "interrupted" when SIGINT/SIGTERM cut training short
    task_line: str = ""  # "task | model | strategy | N train examples | ..." above the table
    collapsed: str | None = None  # why the model learned nothing useful (majority class ...)
    tokens: int = 0  # training tokens (images) the loop consumed
    flops: float | None = None
    config: Any = None  # the run's FinetuneConfig with its `auto` settings decided
