"""What a task kind is: the one thing that varies between fine-tuning a sentiment classifier,
an image classifier or a tagger. Everything else — the run directory, strategies, the loop,
early stopping, the scikit-learn probe, ``metrics.json``, the model card, ``evaluate``,
``predict``, sweeps, k-fold and the study matrix — is written once, in ``pretune.finetune`` and
above, and asks the kind through this contract.

A kind is a ``TaskKind`` subclass in its own module of ``pretune.tasks``, registered in
``pretune.tasks.KINDS``. Its methods, in the order a run calls them:

- data: ``load`` (read + split, from the task config), ``with_budget`` (stratified label
  budget), ``pool`` / ``refold`` (k-fold over train + val), ``default_metric``;
- model: ``load_model`` (the start with this kind's head + its processor: a tokenizer, or the
  image geometry), ``encode`` (a split into model inputs), ``train_batches``, ``loss_fn``,
  ``outputs`` (inputs -> an array of predictions), ``metrics``;
- the scikit-learn probe: ``load_encoder`` and ``features`` (pooled features, no gradients),
  ``probe_targets``;
- export: ``save`` (the Hugging Face directory: weights, tokenizer / image processor, the
  kind's info file), ``card_facts``;
- saved models: ``open_saved`` (a model directory -> ``Saved``), ``read_labeled`` (a labeled
  file for ``evaluate``), ``predict`` (rows for ``predict``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from pretune.config import FinetuneConfig
from pretune.errors import PretuneError
from pretune.models.start import Start

TASK_FILE = "pretune_task.json"  # what a saved model needs to read inputs (all kinds)


class Split(Protocol):
    def __len__(self) -> int: ...
    def subset(self, idx: Any) -> Split: ...


class Task(Protocol):
    """A labeled task with fixed train / validation / test splits."""

    name: str
    type: str  # single_label | multi_label | regression | token (what metrics and folds read)
    labels: list[str]
    train: Any
    val: Any
    test: Any
    budget: int | None

    @property
    def num_labels(self) -> int: ...
    @property
    def majority_baseline(self) -> float: ...


@dataclass
class Loaded:
    """A model and what turns a split into its inputs (a tokenizer, or image geometry)."""

    model: nn.Module
    processor: Any


@dataclass
class Saved:
    """A model directory opened for ``evaluate`` / ``predict``."""

    path: Path
    model: nn.Module
    processor: Any
    task: Any  # a Task with empty splits: labels, type (what metrics need)
    info: dict[str, Any]  # the kind's info file (fields, lengths, geometry, task config)


def scalars(m: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a metrics dict (what logs, selection and reports use)."""
    return {k: float(v) for k, v in m.items() if isinstance(v, int | float)}


def read_info(path: Path, name: str = TASK_FILE) -> dict[str, Any]:
    f = path / name
    return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}


class TaskKind:
    """The contract. A method a kind cannot do raises a one-line PretuneError saying so."""

    name: ClassVar[str]
    modality: ClassVar[str]  # "text" | "image": which starts fit
    pipeline_tag: ClassVar[str]  # the Hugging Face pipeline the saved model serves
    auto_class: ClassVar[str]  # transformers class that loads the saved model
    processor_class: ClassVar[str] = "AutoTokenizer"
    peft_task_type: ClassVar[str] = "SEQ_CLS"  # PEFT TaskType for LoRA
    example_word: ClassVar[str] = "examples"  # "images" in messages and cards

    # ------------------------------------------------------------------ data

    def load(self, cfg: FinetuneConfig, start: Start | None = None) -> Task:
        raise NotImplementedError

    def with_budget(self, task: Any, budget: int | None, seed: int) -> Any:
        raise NotImplementedError

    def pool(self, task: Any) -> Any:
        """train + validation as one split (what k-fold may use)."""
        raise PretuneError(f"k-fold cross-validation is not available for {self.name} tasks")

    def refold(self, task: Any, train: Any, val: Any, fold: int, k: int) -> Any:
        raise PretuneError(f"k-fold cross-validation is not available for {self.name} tasks")

    def fold_labels(self, split: Any) -> list[Any]:
        """Per-example labels of a pooled split (k-fold stratifies single-label tasks)."""
        raise PretuneError(f"k-fold cross-validation is not available for {self.name} tasks")

    def default_metric(self, task: Any) -> str:
        return "macro_f1"

    def metrics(self, task: Any, split: Any, outputs: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError

    def metric_names(self, task: Any) -> set[str]:
        """The scalar metrics this task's runs report (what a sweep may optimise)."""
        split = self.pool(task)
        n = len(split)
        if task.type == "regression":
            dummy: np.ndarray = np.linspace(0.0, 1.0, n)
        else:  # uniform probabilities: only the key names matter here
            c = max(len(task.labels), 1)
            dummy = np.full((n, c), 1.0 / c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return set(scalars(self.metrics(task, split, dummy)))

    def val_metrics(self, task: Any, split: Any, outputs: np.ndarray) -> dict[str, float]:
        """What the loop logs and selects on after each evaluation."""
        return scalars(self.metrics(task, split, outputs))

    # ------------------------------------------------------------------ model

    def load_model(self, cfg: FinetuneConfig, task: Any, start: Start) -> Loaded:
        raise NotImplementedError

    def encode(self, processor: Any, split: Any, task_cfg: Any) -> Any:
        raise NotImplementedError

    def train_batches(self, task: Any, processor: Any, cfg: FinetuneConfig) -> Any:
        raise NotImplementedError

    def loss_fn(self, task: Any, cfg: FinetuneConfig) -> Callable:
        raise NotImplementedError

    tokens_per_batch: ClassVar[Callable[[dict], int] | None] = None  # None: attention-mask sum

    infer_batch_size: ClassVar[int] = 64  # examples per inference batch (evaluate / predict)

    def eval_batch_size(self, cfg: FinetuneConfig) -> int:
        return max(cfg.train.batch_size, self.infer_batch_size)

    def outputs(self, model: nn.Module, inputs: Any, task: Any, batch_size: int,
                device: torch.device) -> np.ndarray:
        raise NotImplementedError

    def val_outputs(self, model: nn.Module, inputs: Any, task: Any, batch_size: int,
                    device: torch.device, metric: str) -> np.ndarray:
        """Outputs on the validation split during training (a kind may skip work the
        selection ``metric`` does not need)."""
        return self.outputs(model, inputs, task, batch_size, device)

    def prompt_outputs(self, cfg: FinetuneConfig, task: Any, start: Start,
                       device: torch.device) -> tuple[np.ndarray, int]:
        """``strategy.name=prompt`` for kinds that prompt by themselves: (test outputs,
        trainable parameters). Text classification prompts in ``pretune.finetune.prompt``."""
        raise PretuneError(f"strategy.name=prompt is not available for {self.name} tasks")

    def notes(self, model: nn.Module, cfg: FinetuneConfig, start: Start) -> list[str]:
        """One-line warnings about this model for this run (printed before training)."""
        return []

    # ------------------------------------------------------------------ per-example results

    def example_records(self, task: Any, split: Any, outputs: Any) -> list[dict[str, Any]]:
        """Per example of ``split``: {text, true, pred, p, score} (``pretune.evaluate.examples``:
        what ``predictions.jsonl`` holds); [] when the kind keeps none."""
        return []

    def trivial(self, task: Any) -> tuple[str, Any] | None:
        """(name, test outputs) of the baseline that learns nothing (the majority class, all-O,
        copying the input): the line a report draws under every curve. None: no such line."""
        return None

    # ------------------------------------------------------------------ sklearn probe

    def load_encoder(self, cfg: FinetuneConfig, task: Any, start: Start) -> Loaded:
        raise PretuneError(f"strategy.sklearn is not available for {self.name} tasks; use the "
                           "loop's linear probe (strategy.sklearn=false)")

    def features(self, loaded: Loaded, split: Any, task_cfg: Any, batch_size: int,
                 device: torch.device) -> np.ndarray:
        raise NotImplementedError

    def feature_keys(self, split: Any) -> list[str] | None:
        """Per-example keys under which features may be cached across runs (None: no cache)."""
        return None

    def probe_targets(self, task: Any, split: Any) -> tuple[list[Any], str]:
        """(targets, task type) for scikit-learn: single_label / multi_label / regression."""
        raise NotImplementedError

    def probe_export(self, loaded: Loaded, head: dict[str, np.ndarray], cfg: FinetuneConfig,
                     task: Any, extra: dict[str, Any]) -> tuple[Callable[[Path], None], str, str]:
        """The fitted probe as a model dir predict / evaluate read: (write(path), auto class,
        pipeline tag). ``head``: the standardisation and linear layer (``probe_head``)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ export

    def save(self, model: nn.Module, processor: Any, path: Path, cfg: FinetuneConfig,
             task: Any, extra: dict[str, Any] | None = None) -> None:
        """Write the Hugging Face directory into ``path`` (an empty temporary directory)."""
        raise NotImplementedError

    def card_facts(self, cfg: FinetuneConfig, task: Any) -> list[tuple[str, Any]]:
        return []

    def export_classes(self, model: nn.Module) -> tuple[str, str]:
        """(transformers auto class, pipeline tag) of the saved model."""
        return self.auto_class, self.pipeline_tag

    # ------------------------------------------------------------------ saved models

    def open_saved(self, path: Path) -> Saved:
        raise NotImplementedError

    def read_labeled(self, saved: Saved, data: str, overrides: list[str]) -> tuple[Any, Any, str]:
        """(split, its model inputs, a short name) of a labeled file for ``evaluate``."""
        raise NotImplementedError

    def predict(self, saved: Saved, input: str, output: Path, overrides: list[str],
                device: torch.device) -> int:
        """Write predictions for ``input`` to ``output``; returns the number of rows."""
        raise NotImplementedError
