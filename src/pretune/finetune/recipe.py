"""Default recipes that learn: what ``optim.lr: auto``, ``class_weights: auto`` and
``train.min_steps`` become for one run, and the check after training that it did learn.

- Learning rate (``optim.lr: auto``), by strategy and model size: full fine-tuning (and
  partial / gradual / llrd / few-shot prompting) of a checkpoint at 1e-4 under 30M
  transformer-block parameters, 5e-5 under 150M, 2e-5 above; a random-init start at 3e-4;
  LoRA at 10x the full rate (at most 1e-3); a head alone (the loop's linear probe) at 1e-3.
- Class weights (``class_weights: auto``): on for single-label classification when the
  smallest class has under a third of the largest's training examples (binary: a minority
  under 25%).
- ``train.min_steps``: a small training set is trained for at least that many optimizer steps
  (more epochs), as few-shot fine-tuning practice does: four epochs of 256 examples are 32 steps,
  too few to move a classifier off the majority class.
- Collapse: after training, validation predictions that are all one class, or a selection
  metric at or below the majority-class baseline's, are named in one line with the likely fixes.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from pretune.config import FinetuneConfig, LoopConfig
from pretune.models.start import Start

# Non-embedding parameters up to which a full fine-tuning learning rate applies.
FULL_LR = ((30e6, 1e-4), (150e6, 5e-5), (math.inf, 2e-5))
SCRATCH_LR, HEAD_LR, LORA_FACTOR, LORA_MAX = 3e-4, 1e-3, 10.0, 1e-3
IMBALANCE = 1 / 3  # smallest / largest class count below this: class weights on (auto)


def block_params(start: Start) -> int | None:
    """Transformer-block parameters of a checkpoint start (from its config.json)."""
    if start.path is None:
        return None
    try:
        from transformers import AutoConfig

        from pretune.models.registry import non_embedding_params

        return non_embedding_params(AutoConfig.from_pretrained(start.path))
    except Exception:  # noqa: BLE001 - an unusual config: fall back to the middle rate
        return None


def auto_lr(strategy: str, start: Start) -> tuple[float, str]:
    """The learning rate of ``optim.lr: auto`` and the reason, in words."""
    if strategy == "linear-probe":
        return HEAD_LR, "a linear head alone"
    n = None if start.random_init else block_params(start)
    if start.random_init:
        full, size = SCRATCH_LR, "a random-init model"
    else:
        full = next(lr for limit, lr in FULL_LR if (n or 100e6) < limit)
        size = f"a {n / 1e6:.0f}M-parameter checkpoint" if n else "a checkpoint"
    if strategy == "lora":
        return min(full * LORA_FACTOR, LORA_MAX), f"LoRA on {size}"
    return full, f"{strategy} fine-tuning of {size}"


def _labels_of(split: Any) -> Any:
    """Class ids of a split: a text split's ``labels``, an image set's ``y``."""
    labels = getattr(split, "labels", None)
    return getattr(split, "y", None) if labels is None else labels


def imbalanced(task: Any) -> bool:
    """Single-label classification whose smallest class is under a third of the largest."""
    if getattr(task, "type", "single_label") != "single_label" or not hasattr(task, "labels"):
        return False
    labels = _labels_of(task.train)
    if labels is None or not len(labels) or not isinstance(task.labels, list):
        return False
    counts = Counter(np.asarray(labels).tolist())
    sizes = [counts.get(i, 0) for i in range(len(task.labels))]
    return min(sizes) < IMBALANCE * max(sizes)


def resolve(cfg: FinetuneConfig, kind_name: str, task: Any, start: Start
            ) -> tuple[FinetuneConfig, list[str]]:
    """``cfg`` with its ``auto`` settings decided for this task and start, and what was
    decided (one line each)."""
    notes: list[str] = []
    update: dict[str, Any] = {}
    if cfg.optim.lr == "auto":
        lr, why = auto_lr(cfg.strategy.name, start)
        update["optim"] = cfg.optim.model_copy(update={"lr": lr})
        notes.append(f"optim.lr=auto: {lr:g} ({why})")
    if cfg.class_weights == "auto":
        on = kind_name in ("text-classification", "image-classification") and imbalanced(task)
        update["class_weights"] = on
        if on:
            notes.append("class_weights=auto: on (the smallest class has under a third of the "
                         "largest's training examples)")
    return (cfg.model_copy(update=update) if update else cfg), notes


MIN_STEPS_KINDS = ("text-classification", "token-classification")


def with_min_steps(loop: LoopConfig, batches_per_epoch: int, kind_name: str
                   ) -> tuple[LoopConfig, str | None]:
    """An epoch budget too short for ``loop.min_steps`` optimizer steps, lengthened (text and
    token classification; generation and image recipes set their own epochs)."""
    if not loop.min_steps or not loop.epochs or loop.max_steps or loop.max_tokens \
            or kind_name not in MIN_STEPS_KINDS:
        return loop, None
    per_epoch = max(1, math.ceil(batches_per_epoch / loop.grad_accum))
    if loop.epochs * per_epoch >= loop.min_steps:
        return loop, None
    epochs = loop.min_steps / per_epoch
    update: dict[str, Any] = {"epochs": epochs}
    if loop.eval_every is None:  # not one validation per (tiny) epoch: about five in all
        update["eval_every"] = max(per_epoch, math.ceil(loop.min_steps / 5))
    note = (f"train.min_steps={loop.min_steps}: {epochs:.3g} epochs instead of {loop.epochs:g} "
            f"({per_epoch} steps per epoch)" + (f", validation every {update['eval_every']} "
                                                 "steps" if "eval_every" in update else ""))
    return loop.model_copy(update=update), note


def collapse(task: Any, val_outputs: np.ndarray | None, val_metrics: dict[str, Any],
             metric: str) -> str | None:
    """One line when a single-label classifier learned nothing useful, else None."""
    if val_outputs is None or getattr(task, "type", None) != "single_label" \
            or not len(val_outputs) or np.ndim(val_outputs) != 2:
        return None
    preds = np.argmax(val_outputs, axis=1)
    truth = np.asarray(_labels_of(task.val))
    majority = Counter(np.asarray(_labels_of(task.train)).tolist()).most_common(1)[0][0]
    from pretune.evaluate.metrics import task_metrics

    base = task_metrics("single_label", truth.tolist(),
                        np.eye(len(task.labels))[np.full(len(truth), majority)],
                        task.labels).get(metric)
    score = val_metrics.get(metric)
    one = len(set(preds.tolist())) == 1
    if not one and (score is None or base is None or score > base + 1e-9):
        return None
    what = f"predicts '{task.labels[int(preds[0])]}' for every validation example" if one \
        else f"scores {metric} {score:.3f} on validation, no better than the majority class"
    return (f"the model {what} (majority-class baseline {metric} {base:.3f}): it has not "
            "learned the task; try a higher optim.lr, class_weights=true, or more steps "
            "(train.min_steps / train.epochs)")


__all__ = ["auto_lr", "collapse", "imbalanced", "resolve", "with_min_steps"]
