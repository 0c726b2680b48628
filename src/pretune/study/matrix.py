"""The study matrix, the same for every modality and task kind: cells (task x start x
strategy x budget x seed), the fine-tuning config of each cell, and the typed result row each
one leaves (``study.cells`` runs them).

A modality's setup (``phases.text_setup``, ``vision.image_setup``) runs the phases before the
matrix and hands over a ``Setup``: the starts as model specs, the tasks (loaded once), the
report's extra sections. Every cell then calls the one fine-tuning path, ``finetune``, and is
identified by the fingerprint of its inputs (``identity``: its fine-tuning config, the task
data's content, the start's weights and tokenizer): a rerun reuses a finished cell only when
that fingerprint is unchanged.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pretune.config import (
    KIND_SKLEARN_PROBE,
    KIND_STRATEGIES,
    FinetuneConfig,
    MatrixConfig,
    StrategyConfig,
    config_hash,
    deep_merge,
    format_validation_error,
    load_yaml,
)
from pretune.errors import PretuneError
from pretune.finetune.result import FinetuneResult
from pretune.train.trackers import RunInfo, flat_params

ZERO_SHOT = "zero-shot"


@dataclass
class Phase:
    """Compute accounting for one phase of the study."""

    phase: str
    tokens: int | None
    seconds: float
    flops: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Cell:
    """One fine-tuning run of the matrix."""

    task: str
    start: str
    strategy: str  # display name: strategy name (+ "-sklearn" variant)
    strategy_index: int
    budget: int | None  # None = all training examples
    budget_label: str
    seed: int
    settings: str = ""  # hash of the cell's start_/task_finetune settings ("" = study defaults)

    @property
    def key(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.start)
        tag = f"__ft-{self.settings}" if self.settings else ""
        return f"{self.task}__{safe}__{self.strategy}__{self.budget_label}__s{self.seed}{tag}"


@dataclass
class Row:
    """One cell's result: the columns every row has, then its test metrics (scalars), and the
    confusion matrix the report draws. ``as_dict`` is the flat record of results.csv."""

    task: str
    start: str
    strategy: str
    budget: int  # labels used: 0 for zero-shot, the train size for "all", -1 if unknown
    budget_label: str
    seed: int
    status: str = "ok"  # ok | failed
    error: str = ""
    seconds: float = 0.0
    train_examples: int = 0
    trainable_params: int = 0
    metrics: dict[str, float | int | str] = field(default_factory=dict)
    confusion: list[list[int]] | None = None
    labels: list[str] | None = None
    examples: list[dict[str, str]] | None = None  # generation: the first test outputs
    collapsed: str = ""  # why the cell's model learned nothing (one class for everything ...)
    cell: str = ""  # the cell's key: its run dir cells/<cell>/ (predictions.jsonl ...)
    tokens: int = 0  # fine-tuning tokens (images) the loop consumed
    flops: float | None = None  # ≈ fine-tuning FLOPs
    recipe: str = ""  # the settings it trained with (lr, batch, length), `auto` decided
    per_class: dict[str, float] | None = None  # test F1 per class (entity type)

    def as_dict(self) -> dict[str, Any]:
        row = {k: v for k, v in asdict(self).items() if k not in ("metrics", "confusion",
                                                                   "labels", "examples",
                                                                   "per_class")}
        row.update(self.metrics)
        if self.confusion is not None:
            row["confusion"], row["labels"] = self.confusion, self.labels
        if self.examples is not None:
            row["examples"] = self.examples
        if self.per_class is not None:
            row["per_class"] = self.per_class
        return row


@dataclass
class StartSpec:
    """How a start fine-tunes: the model name, the architecture overrides of a random-init
    start (None: keep the fine-tuning config's), the tokenizer of a random-init start."""

    name: str
    overrides: dict[str, Any] | None = None
    tokenizer: str | None = None


@dataclass
class Setup:
    """What a modality hands the matrix."""

    starts: dict[str, StartSpec]
    tasks: dict[str, Any]  # task label -> its task config
    loaded: dict[str, Any]  # task label -> the task, loaded once (budgets drawn per cell)
    pretrain: dict | None = None  # the report's pre-training section
    probes: list[dict] | None = None
    contamination: list[dict] | None = None


def strategy_label(s: StrategyConfig) -> str:
    if s.name == "linear-probe" and s.sklearn:
        return "linear-probe-sklearn"
    if s.name == "prompt" and s.few_shot:
        return "prompt-few-shot"
    return s.name


def task_label(t: Any) -> str:
    """A task's short name from its ``path`` (a list of class files: their folder's)."""
    if isinstance(t.path, list) or set("*?[") & set(t.path):
        from pretune.data.class_files import classes_name

        return classes_name(t.path)
    return Path(t.path.removeprefix("builtin:")).stem.split(".")[0]


def task_labels(cfg: MatrixConfig) -> dict[str, Any]:
    """label -> task config; two tasks with one label would mix their cells, so they fail."""
    out: dict[str, Any] = {}
    for t in cfg.tasks:  # every MatrixConfig subclass has tasks
        name = task_label(t)
        if name in out:
            raise PretuneError(f"two study tasks are both named '{name}' ({out[name].path}, "
                               f"{t.path}); rename one of the files")
        out[name] = t
    return out


def _excluded(cfg: MatrixConfig, cell: Cell) -> bool:
    fields = {"task": cell.task, "start": cell.start, "strategy": cell.strategy,
              "budget": cell.budget_label, "seed": str(cell.seed)}
    return any(all(str(v) == fields[k] for k, v in rule.items()) for rule in cfg.exclude)


def plan_cells(cfg: MatrixConfig) -> list[Cell]:
    """The matrix, less ``exclude``d cells and strategies that do not apply to a task's kind
    (prompting and the scikit-learn probe are not for token tagging).
    Zero-shot prompting trains nothing, so it runs once per task and start."""
    cells: list[Cell] = []
    # A start (or task) with its own fine-tuning settings gets them in its cell keys: changing
    # them re-runs those cells instead of silently reusing results of the old settings.
    tasks = task_labels(cfg)
    unknown = sorted(set(cfg.task_finetune) - set(tasks))
    if unknown:
        raise PretuneError(f"task_finetune names {', '.join(unknown)}, which is not a task of "
                           f"this study ({', '.join(tasks)})")
    for tname, task in tasks.items():
        tags = {s: config_hash(cell_finetune(cfg, s, tname))[:8]
                if s in cfg.start_finetune or tname in cfg.task_finetune else ""
                for s in cfg.starts}
        for start in cfg.starts:
            for si, strat in enumerate(cfg.strategies):
                if strat.name not in KIND_STRATEGIES[task.kind] or (
                        strat.sklearn and strat.name == "linear-probe"
                        and task.kind not in KIND_SKLEARN_PROBE):
                    continue
                label = strategy_label(strat)
                if strat.name == "prompt" and not strat.few_shot:
                    cells.append(Cell(tname, start, label, si, None, ZERO_SHOT, cfg.seeds[0],
                                      tags[start]))
                    continue
                for budget in cfg.budgets:
                    b = None if budget == "all" else int(budget)
                    for seed in cfg.seeds:
                        cells.append(Cell(tname, start, label, si, b, str(budget), seed,
                                          tags[start]))
    return [c for c in cells if not _excluded(cfg, c)]


def start_finetune(cfg: Any, start: str) -> FinetuneConfig:
    """The study's fine-tuning defaults with ``start_finetune[start]`` applied: a sweep's tuned
    optimiser settings (sweep dir or best.yaml) or an explicit mapping."""
    extra = cfg.start_finetune.get(start)
    if extra is None:
        return cfg.finetune
    if isinstance(extra, str):
        path = Path(extra) / "best.yaml" if Path(extra).is_dir() else Path(extra)
        best = load_yaml(path)
        if not isinstance(best.get("optim"), dict):
            raise PretuneError(f"start_finetune.{start}: {path} has no `optim` section "
                               "(expected a sweep's best.yaml)")
        extra = {"optim": best["optim"]}
    merged = deep_merge(cfg.finetune.model_dump(mode="json"), extra)
    try:
        return FinetuneConfig.model_validate(merged)
    except ValidationError as e:
        raise PretuneError(format_validation_error(e, f"study start_finetune.{start}",
                                                   FinetuneConfig)) from None


def cell_finetune(cfg: Any, start: str, task: str) -> FinetuneConfig:
    """``start_finetune(start)`` with ``task_finetune[task]`` merged over it."""
    ft = start_finetune(cfg, start)
    extra = getattr(cfg, "task_finetune", {}).get(task)
    if not extra:
        return ft
    try:
        return FinetuneConfig.model_validate(deep_merge(ft.model_dump(mode="json"), extra))
    except ValidationError as e:
        raise PretuneError(format_validation_error(e, f"study task_finetune.{task}",
                                                   FinetuneConfig)) from None


def cell_config(cfg: Any, cell: Cell, setup: Setup, out: Path) -> FinetuneConfig:
    """The fine-tuning config of one cell: the start's and the task's settings, this task,
    strategy, budget and seed; quiet, and no model saved."""
    ft = cell_finetune(cfg, cell.start, cell.task)
    spec = setup.starts[cell.start]
    model = {"name": spec.name} | ({} if spec.overrides is None else {"overrides": spec.overrides})
    return ft.model_copy(update={
        "name": cell.key,
        "output_dir": str(out / "cells"),
        "model": ft.model.model_copy(update=model),
        "tokenizer": spec.tokenizer,
        "task": setup.tasks[cell.task].model_copy(update={"budget": cell.budget}),
        "strategy": cfg.strategies[cell.strategy_index],
        "train": ft.train.model_copy(update={"seed": cell.seed, "progress": False}),
        "save_model": False,
    })


def cell_run_info(cfg: Any, cell: Cell, ft: FinetuneConfig, out: Path) -> RunInfo:
    """A cell in the trackers: one run in the study's experiment, named by its key, with its
    place in the matrix (start, strategy, budget, seed) and its whole config as hparams."""
    matrix = {"cell.task": cell.task, "cell.start": cell.start, "cell.strategy": cell.strategy,
              "cell.budget": cell.budget_label, "cell.seed": cell.seed}
    return RunInfo(cell.key, cfg.name, out, {**matrix, **flat_params(ft)})


def recipe_line(ft: FinetuneConfig | None) -> str:
    """The settings a cell trained with, in a few words (the report's hover shows them)."""
    if ft is None:
        return ""
    length = f", max length {ft.task.max_length}" if getattr(ft.task, "max_length", None) else ""
    if ft.strategy.name == "linear-probe" and ft.strategy.sklearn:
        return f"scikit-learn logistic regression on frozen mean-pooled features{length}"
    if ft.strategy.name == "prompt" and not ft.strategy.few_shot:
        return f"no parameter update (zero-shot prompt){length}"
    t, o = ft.train, ft.optim
    steps = ([f"{t.max_steps} steps"] if t.max_steps else []) + \
        ([f"{t.epochs:g} epochs"] if t.epochs else [])
    bits = [f"lr {o.lr:g}" if isinstance(o.lr, float) else f"lr {o.lr}",
            f"batch {t.batch_size}", *steps[:1], f"weight decay {o.weight_decay:g}"]
    return ", ".join(bits) + length


def result_row(cell: Cell, result: FinetuneResult, labels: list[str]) -> Row:
    m = result.metrics
    confusion = m.get("confusion_matrix")  # the report draws the best run's matrix per start
    per = m.get("per_class")
    per_class = {str(k): float(v["f1"]) for k, v in per.items()
                 if isinstance(v, dict) and v.get("f1") is not None} \
        if isinstance(per, dict) else None
    return Row(cell.task, cell.start, cell.strategy, _row_budget(cell, result.train_examples),
               cell.budget_label, cell.seed, seconds=round(result.seconds, 2),
               train_examples=result.train_examples, trainable_params=result.trainable_params,
               metrics={k: v for k, v in m.items() if isinstance(v, int | float | str)},
               confusion=confusion, labels=labels if confusion is not None else None,
               examples=m.get("examples"), collapsed=result.collapsed or "", cell=cell.key,
               tokens=result.tokens, flops=result.flops, recipe=recipe_line(result.config),
               per_class=per_class or None)


def failed_row(cell: Cell, error: str, t0: float) -> Row:
    budget = _row_budget(cell, 0) if cell.budget is not None or cell.budget_label == ZERO_SHOT \
        else -1
    return Row(cell.task, cell.start, cell.strategy, budget, cell.budget_label, cell.seed,
               status="failed", error=error.splitlines()[0][:300],
               seconds=round(time.perf_counter() - t0, 2), cell=cell.key)


def _row_budget(cell: Cell, train_examples: int) -> int:
    """Labels a run used: 0 for zero-shot, the train size for "all", else the budget."""
    if cell.budget_label == ZERO_SHOT:
        return 0
    return train_examples if cell.budget is None else cell.budget


__all__ = ["Cell", "Phase", "Row", "Setup", "StartSpec", "ZERO_SHOT", "cell_config",
           "plan_cells", "result_row", "start_finetune", "strategy_label", "task_label"]
